"""Quality checks of a series, run after every ingest that touches it; shown on the study.

- gaps in the instance numbers, and numbers used twice;
- image sizes (rows × columns) or orientations (Image Orientation Patient) that differ within
  the series;
- files missing from the data directory, or of another size than stored;
- the hierarchy: every instance names the study's patient, study and series UIDs.

Each finding is {"check", "severity" (warning | error), "message"}.
"""

from __future__ import annotations

import math
import os
from collections import Counter

from django.conf import settings

from imaging.models import Series


def _first(attributes: dict, tag: str):
    value = (attributes.get(tag) or {}).get("Value") or []
    return value[0] if value else None


def numbers_of(attributes: dict, tag: str, count: int) -> list[float] | None:
    """The `count` numbers of a multi-valued attribute (e.g. Image Orientation Patient), or None
    when it is missing or not numbers (a file's odd values must not break a page)."""
    value = (attributes.get(tag) or {}).get("Value")
    if not isinstance(value, list) or len(value) != count:
        return None
    try:
        found = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return found if all(math.isfinite(v) for v in found) else None


def _ranges(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:15]))
    return shown + (f" … ({len(numbers)} in all)" if len(numbers) > 15 else "")


CHECKED_TAGS = ("00200037", "0020000D", "0020000E", "00100020")  # orientation, UIDs, patient ID


def checked_values(attributes: dict) -> dict:
    """What the checks compare of an instance (`Instance.checked`): the values of CHECKED_TAGS."""
    found = {}
    for tag in CHECKED_TAGS:
        value = (attributes.get(tag) or {}).get("Value")
        if value is not None:
            found[tag] = value
    return found


class _Checked:
    """What the checks read of an instance: its columns and `checked`, not its whole JSON."""

    __slots__ = ("number", "rows", "columns", "size", "full_path", "attributes")

    def __init__(self, row: dict):
        self.number, self.rows, self.columns = row["number"], row["rows"], row["columns"]
        self.size = row["size"]
        self.full_path = os.path.join(settings.PORTAL_DATA_DIR, row["path"])
        self.attributes = {tag: {"Value": value} for tag, value in (row["checked"] or {}).items()}


def _instances(series: Series) -> list[_Checked]:
    rows = series.instances.values("number", "rows", "columns", "size", "path", "checked")
    return [_Checked(row) for row in rows]


def check_series(series: Series) -> list[dict]:
    findings: list[dict] = []
    instances = _instances(series)
    study = series.study
    numbers = [i.number for i in instances if i.number is not None]
    if numbers:
        repeated = sorted(n for n, count in Counter(numbers).items() if count > 1)
        if repeated:
            findings.append(
                {
                    "check": "instance_numbers",
                    "severity": "warning",
                    "message": f"Instance numbers used more than once: {_ranges(repeated)}.",
                }
            )
        present = set(numbers)
        missing = [n for n in range(min(present), max(present) + 1) if n not in present]
        if missing:
            findings.append(
                {
                    "check": "instance_numbers",
                    "severity": "warning",
                    "message": f"Gaps in the instance numbers: {_ranges(missing)} missing.",
                }
            )
    if len(numbers) < len(instances) and len(instances) > 1:
        findings.append(
            {
                "check": "instance_numbers",
                "severity": "warning",
                "message": f"{len(instances) - len(numbers)} instance(s) without an instance number.",
            }
        )
    sizes = {(i.rows, i.columns) for i in instances if i.rows and i.columns}
    if len(sizes) > 1:
        shown = ", ".join(f"{c}×{r}" for r, c in sorted(sizes))
        findings.append(
            {"check": "image_size", "severity": "warning", "message": f"Mixed image sizes: {shown}."}
        )
    orientations = set()
    for instance in instances:
        value = numbers_of(instance.attributes, "00200037", 6)
        if value:
            orientations.add(tuple(round(v, 3) for v in value))
    if len(orientations) > 1:
        findings.append(
            {
                "check": "orientation",
                "severity": "warning",
                "message": f"{len(orientations)} different image orientations in one series.",
            }
        )
    lost, changed = [], []
    for instance in instances:  # one stat call each (a series may hold thousands)
        try:
            size = os.stat(instance.full_path).st_size
        except OSError:
            lost.append(instance)
            continue
        if size != instance.size:
            changed.append(instance)
    if lost:
        findings.append(
            {
                "check": "files",
                "severity": "error",
                "message": f"{len(lost)} file(s) missing from the data directory.",
            }
        )
    if changed:
        findings.append(
            {
                "check": "files",
                "severity": "error",
                "message": f"{len(changed)} file(s) changed size since they were stored (damaged?).",
            }
        )
    wrong = [
        i
        for i in instances
        if _first(i.attributes, "0020000D") not in (None, study.study_uid)
        or _first(i.attributes, "0020000E") not in (None, series.series_uid)
        or str(_first(i.attributes, "00100020") or "") != study.patient.patient_id
    ]
    if wrong:
        findings.append(
            {
                "check": "hierarchy",
                "severity": "error",
                "message": f"{len(wrong)} instance(s) name another patient, study or series than they "
                "are filed under.",
            }
        )
    return findings


def check_study_series(study) -> None:
    for series in study.series.select_related("study__patient"):
        findings = check_series(series)
        if findings != series.quality:
            Series.objects.filter(pk=series.pk).update(quality=findings)
