"""Quality checks per series: gaps and repeats in instance numbers, mixed sizes and orientations,
missing or changed files, instances filed under another patient/study/series."""

from __future__ import annotations

import pydicom
import pytest

from imaging.models import IngestRun, Instance, Series
from imaging.services.ingest import run_ingest
from imaging.services.quality import check_series
from imaging.tests.conftest import dicom_file

pytestmark = pytest.mark.django_db


def series_files(tmp_path, numbers, *, sizes=None, orientations=None):
    """Copies of the CT with new instance UIDs in one series."""
    base = pydicom.dcmread(dicom_file("CT_small.dcm"))
    paths = []
    for position, number in enumerate(numbers):
        copy = pydicom.dcmread(dicom_file("CT_small.dcm"))
        copy.SOPInstanceUID = f"{base.SOPInstanceUID}.{position + 1}"
        copy.InstanceNumber = number
        if sizes and sizes[position]:
            copy.Columns = sizes[position]  # only the header: enough for the index's view
        if orientations and orientations[position]:
            copy.ImageOrientationPatient = orientations[position]
        path = tmp_path / f"{position}.dcm"
        copy.save_as(path)
        paths.append((path.name, path))
    return paths


def ingest(project, people, items):
    run = IngestRun.objects.create(project=project, source="upload", created_by=people["writer"])
    return run_ingest(run, items)


def test_a_clean_series_has_no_findings(project, people, data_dir, tmp_path):
    ingest(project, people, series_files(tmp_path, [1, 2, 3]))
    assert Series.objects.get().quality == []


def test_findings(project, people, data_dir, tmp_path):
    items = series_files(
        tmp_path,
        [1, 2, 2, 5],
        sizes=[None, None, None, 64],
        orientations=[None, None, None, [0, 1, 0, 1, 0, 0]],
    )
    ingest(project, people, items)
    series = Series.objects.get()
    messages = [f["message"] for f in series.quality]
    assert "Gaps in the instance numbers: 3, 4 missing." in messages
    assert "Instance numbers used more than once: 2." in messages
    assert any(f["check"] == "image_size" for f in series.quality)
    assert any(f["check"] == "orientation" for f in series.quality)
    # a file gone and one damaged: errors, once the checks run again
    first, second = Instance.objects.order_by("pk")[:2]
    first.full_path.unlink()
    second.full_path.write_bytes(b"short")
    series.refresh_from_db()
    findings = check_series(Series.objects.select_related("study__patient").get(pk=series.pk))
    errors = [f["message"] for f in findings if f["severity"] == "error"]
    assert "1 file(s) missing from the data directory." in errors
    assert "1 file(s) changed size since they were stored (damaged?)." in errors
    Instance.objects.filter(pk=first.pk).update(
        attributes={"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}, checked={"0020000D": ["1.2.3"]}
    )
    findings = check_series(Series.objects.select_related("study__patient").get(pk=series.pk))
    assert any(f["check"] == "hierarchy" for f in findings)


def test_odd_values_do_not_break_the_checks_or_the_stack(project, people, data_dir, tmp_path):
    from imaging.web import stack_order

    ingest(project, people, series_files(tmp_path, [1, 2]))
    first, second = Instance.objects.order_by("pk")
    Instance.objects.filter(pk=first.pk).update(
        attributes={
            **first.attributes,
            "00200037": {"vr": "DS", "Value": [1, None, 0, 0, 1, 0]},
            "00200032": {"vr": "DS", "Value": ["x", 0, 0]},
        }
    )
    series = Series.objects.select_related("study__patient").get()
    assert not any(f["check"] == "orientation" for f in check_series(series))
    assert [i.number for i in stack_order(list(series.instances.all()))] == [1, 2]
