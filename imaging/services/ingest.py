"""Ingesting DICOM: files, folders and ZIP archives (with or without DICOMDIR) into a project's index.

Each run (`IngestRun`) reports every file: accepted; duplicate (the same SOP Instance UID with the
same content: skipped); conflict (the same UID with other content: both kept, both flagged);
rejected with the reason (not DICOM – saying what it is –, truncated, UIDs missing, unreadable,
an archive entry that leaves the archive). One bad file never stops the others.

Files are stored under `<data dir>/dicom/<project>/<study uid>/<series uid>/<sop uid>.dcm`,
written under a temporary name and renamed. The index keeps every non-bulk attribute as DICOM
JSON; bulk values (pixel data, large binary) are referred to, not copied.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from imaging.models import DeidSettings, IngestRun, IngestState, Instance, Patient, Series, Study
from imaging.services.quality import check_study_series
from portal.services.files import describe_file

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
REQUIRED_UIDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
BULK_THRESHOLD = 1024  # bytes: larger binary values stay in the file (BulkDataURI)
PIXEL_TAGS = ("7FE00010", "7FE00008", "7FE00009", "54000100")  # pixel data (int, float, double), waveform
MAX_ARCHIVE_MEMBERS = 100_000
MAX_COMPRESSION_RATIO = 200  # an entry that unpacks to more than this many times its size is refused
READ_BLOCK = 1024 * 1024


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


_READ_ERRORS = (
    EOFError,
    ValueError,
    OSError,
    KeyError,
    TypeError,
    OverflowError,
    NotImplementedError,
    AttributeError,
)


class Rejected(Exception):  # noqa: N818 - an outcome, reported, not an error
    """A file that is not taken; the message is the report's reason."""


class IsIndex(Rejected):
    """A DICOMDIR: reported as the archive's index, not as a rejected file."""


def read_dataset(path: Path):
    """The parsed file, or `Rejected` saying why not."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    errors = (
        EOFError,
        ValueError,
        OSError,
        KeyError,
        TypeError,
        OverflowError,
        NotImplementedError,
        AttributeError,
    )
    try:
        dataset = pydicom.dcmread(path)
    except InvalidDicomError:
        # Without the Part 10 header (preamble, file meta), as some old systems write: taken only
        # if it parses into a dataset with its UIDs.
        try:
            dataset = pydicom.dcmread(path, force=True)
            if not str(dataset.get("SOPInstanceUID", "") or "").strip() or not UID.match(
                str(dataset.get("SOPClassUID", "") or "").strip()
            ):
                raise InvalidDicomError("no SOP UIDs")
            dataset.headerless = True
        except (InvalidDicomError, *errors):
            raise Rejected(f"not DICOM: found {describe_file(path)}") from None
    except errors as exc:
        raise Rejected(f"unreadable or truncated DICOM ({type(exc).__name__}: {exc})"[:500]) from None
    _check_complete(dataset, path.stat().st_size)
    meta_class = str(getattr(dataset, "file_meta", {}).get("MediaStorageSOPClassUID", "") or "")
    if meta_class == DICOMDIR_CLASS or "DirectoryRecordSequence" in dataset:
        raise IsIndex("DICOMDIR: the archive's index (its files are read themselves)")
    missing = [name for name in REQUIRED_UIDS if not str(dataset.get(name, "") or "").strip()]
    if missing:
        raise Rejected(f"missing UIDs: {', '.join(missing)}")
    bad = [name for name in REQUIRED_UIDS if not UID.match(str(dataset.get(name)).strip())]
    if bad:
        raise Rejected(f"malformed UIDs: {', '.join(bad)}")
    if "PixelData" in dataset and "TransferSyntaxUID" in getattr(dataset, "file_meta", {}):
        _check_pixel_data(dataset)
    return dataset


def _check_complete(dataset, size: int) -> None:
    """An element whose value would end past the end of the file: pydicom stops reading there
    quietly, so a cut-off file looks whole. (Checked on the raw elements, before any is decoded.)"""
    needed = 0

    def walk(items) -> None:
        nonlocal needed
        for raw in list(items._dict.values()):
            tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
            if tell is not None and length is not None and length != 0xFFFFFFFF:
                needed = max(needed, tell + length)
            if raw.VR == "SQ":
                for item in items[raw.tag].value or []:
                    walk(item)

    try:
        walk(dataset)
    except (*_READ_ERRORS,) as exc:
        raise Rejected(f"unreadable or truncated DICOM ({type(exc).__name__}: {exc})"[:500]) from None
    if needed > size:
        raise Rejected(f"truncated: the file ends at byte {size:,} but its last element needs {needed:,}")


def _check_pixel_data(dataset) -> None:
    """Uncompressed pixel data shorter than the image it claims: a truncated file."""
    syntax = dataset.file_meta.TransferSyntaxUID
    if syntax.is_compressed:
        return
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        samples = int(dataset.get("SamplesPerPixel", 1) or 1)
        bits = int(dataset.BitsAllocated)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise Rejected("pixel data without a valid image size (Rows, Columns, BitsAllocated)") from None
    expected = rows * columns * samples * frames * bits // 8
    have = len(dataset.PixelData)
    if have < expected:
        raise Rejected(f"truncated: the pixel data has {have:,} of the {expected:,} bytes its size needs")


def _save_part10(dataset, target: Path, keep_meta: bool = False) -> None:
    """Write a dataset as a DICOM Part 10 file; meta added unless `keep_meta` (then only the
    instance UID in it follows the dataset's)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ImplicitVRLittleEndian

    if keep_meta and "TransferSyntaxUID" in getattr(dataset, "file_meta", {}):
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.save_as(target, enforce_file_format=True)
        return
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if getattr(dataset, "is_implicit_VR", True) else "1.2.840.10008.1.2.1"
    )
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    dataset.file_meta = meta
    dataset.save_as(target, enforce_file_format=True)


def attributes_json(dataset) -> dict:
    """Every attribute as DICOM JSON; bulk values become references (`BulkDataURI` "bulk:<tag>")."""

    def bulk(element) -> str:
        return f"bulk:{element.tag:08X}"

    data = dataset.to_json_dict(bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=bulk)
    for tag in PIXEL_TAGS:  # pixels stay in the file, however small
        if tag in data and "InlineBinary" in data[tag]:
            data[tag] = {"vr": data[tag]["vr"], "BulkDataURI": f"bulk:{tag}"}
    return data


def _text(dataset, name: str, limit: int) -> str:
    value = dataset.get(name, "")
    return str(value if value is not None else "").strip()[:limit]


def _int(dataset, name: str) -> int | None:
    try:
        value = dataset.get(name)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def instance_directory(project_id: int, study_uid: str, series_uid: str) -> Path:
    return Path(settings.PORTAL_DATA_DIR) / "dicom" / str(project_id) / study_uid / series_uid


def ingest_file(run: IngestRun, name: str, path: Path) -> dict:
    """Take one file into the run's project; returns its report entry (with what de-identification
    changed, where the project asks for it)."""
    holder: dict = {}
    try:
        entry = _ingest_file(run, name, path, holder)
    finally:
        path.with_name(path.name + ".deid").unlink(missing_ok=True)
    deid = holder.get("deid")
    if deid is not None and entry["outcome"] != "rejected":
        entry["deidentified"] = {
            "changes": len(deid.changes),
            "attributes": sorted({c["keyword"] or c["tag"] for c in deid.changes})[:300],
            "flags": deid.flags,
        }
    return entry


def _ingest_file(run: IngestRun, name: str, path: Path, holder: dict) -> dict:
    try:
        dataset = read_dataset(path)
    except IsIndex as exc:
        return {"file": name, "outcome": "index", "reason": str(exc)}
    except Rejected as exc:
        return {"file": name, "outcome": "rejected", "reason": str(exc)}
    deid_settings = DeidSettings.objects.filter(project_id=run.project_id, enabled=True).first()
    deid = None
    if deid_settings is not None:
        from imaging.services.deid import deidentify

        try:
            deid = holder["deid"] = deidentify(dataset, deid_settings)
        except Exception as exc:  # noqa: BLE001 - an odd value must not store identifying data
            return {"file": name, "outcome": "rejected", "reason": f"cannot be de-identified ({exc})"[:500]}
        cleaned = path.with_name(path.name + ".deid")
        _save_part10(dataset, cleaned, keep_meta=True)
        path = cleaned
    sop_uid = str(dataset.SOPInstanceUID).strip()
    try:
        attributes = attributes_json(dataset)
    except Exception as exc:  # noqa: BLE001 - pydicom's many ways to fail on odd values
        return {"file": name, "outcome": "rejected", "reason": f"unreadable attributes ({exc})"[:500]}
    sha = file_sha256(path)
    project_id = run.project_id
    study_uid, series_uid = str(dataset.StudyInstanceUID).strip(), str(dataset.SeriesInstanceUID).strip()
    with transaction.atomic():
        same_uid = list(
            Instance.objects.select_for_update().filter(
                series__study__project_id=project_id, sop_instance_uid=sop_uid
            )
        )
        if any(i.sha256 == sha for i in same_uid):
            return {
                "file": name,
                "outcome": "duplicate",
                "reason": "already stored (same UID, same content)",
                "sop_instance_uid": sop_uid,
            }
        patient, _ = Patient.objects.get_or_create(
            project_id=project_id,
            patient_id=_text(dataset, "PatientID", 64),
            defaults={
                "name": _text(dataset, "PatientName", 324),
                "birth_date": _text(dataset, "PatientBirthDate", 8),
                "sex": _text(dataset, "PatientSex", 16),
            },
        )
        study, created = Study.objects.get_or_create(
            project_id=project_id,
            study_uid=study_uid,
            defaults={
                "patient": patient,
                "study_date": _text(dataset, "StudyDate", 8),
                "study_time": _text(dataset, "StudyTime", 16),
                "description": _text(dataset, "StudyDescription", 200),
                "accession_number": _text(dataset, "AccessionNumber", 16),
                "study_id": _text(dataset, "StudyID", 16),
                "referring_physician": _text(dataset, "ReferringPhysicianName", 324),
            },
        )
        series, _ = Series.objects.get_or_create(
            study=study,
            series_uid=series_uid,
            defaults={
                "modality": _text(dataset, "Modality", 16),
                "number": _int(dataset, "SeriesNumber"),
                "description": _text(dataset, "SeriesDescription", 200),
                "body_part": _text(dataset, "BodyPartExamined", 64),
            },
        )
        directory = instance_directory(project_id, study_uid, series_uid)
        directory.mkdir(parents=True, exist_ok=True)
        file_name = f"{sop_uid}.dcm" if not same_uid else f"{sop_uid}-{sha[:12]}.dcm"
        target = directory / file_name
        partial = directory / f".{file_name}.partial"
        if getattr(dataset, "headerless", False):
            _save_part10(dataset, partial)  # stored as a proper DICOM file, for DICOMweb and viewers
        else:
            shutil.copyfile(path, partial)
        os.replace(partial, target)
        instance = Instance.objects.create(
            series=series,
            sop_instance_uid=sop_uid,
            sop_class_uid=str(dataset.SOPClassUID).strip(),
            number=_int(dataset, "InstanceNumber"),
            transfer_syntax=str(dataset.file_meta.get("TransferSyntaxUID", "") or ""),
            rows=_int(dataset, "Rows"),
            columns=_int(dataset, "Columns"),
            frames=_int(dataset, "NumberOfFrames") or 1,
            path=str(target.relative_to(settings.PORTAL_DATA_DIR)),
            size=target.stat().st_size,
            sha256=sha,
            conflict=bool(same_uid),
            attributes=attributes,
            ingest=run,
        )
        if deid is not None:
            from imaging.services.deid import record_pseudonyms

            record_pseudonyms(deid)
        if same_uid:
            Instance.objects.filter(pk__in=[i.pk for i in same_uid]).update(conflict=True)
            return {
                "file": name,
                "outcome": "conflict",
                "sop_instance_uid": sop_uid,
                "instance": instance.pk,
                "reason": "an instance with this UID but other content was stored before: both are kept",
            }
    return {
        "file": name,
        "outcome": "accepted",
        "sop_instance_uid": sop_uid,
        "instance": instance.pk,
        "study": study.study_uid,
        "new_study": created,
    }


def _archive_entries(archive: Path, workdir: Path, report: list[dict]) -> Iterator[tuple[str, Path]]:
    """Unpack a ZIP safely into `workdir`, one entry at a time; refused entries are reported."""
    try:
        bundle = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        report.append(
            {"file": archive.name, "outcome": "rejected", "reason": f"a broken ZIP archive ({exc})"}
        )
        return
    with bundle:
        members = [m for m in bundle.infolist() if not m.is_dir()]
        if len(members) > MAX_ARCHIVE_MEMBERS:
            report.append(
                {
                    "file": archive.name,
                    "outcome": "rejected",
                    "reason": f"{len(members):,} entries; at most {MAX_ARCHIVE_MEMBERS:,} per archive",
                }
            )
            return
        budget = settings.IMAGING_MAX_UNPACKED_BYTES
        for number, member in enumerate(members):
            name = member.filename
            parts = Path(name).parts
            if Path(name).is_absolute() or ".." in parts or name.startswith(("/", "\\")):
                report.append({"file": name, "outcome": "rejected", "reason": "a path leaving the archive"})
                continue
            if (member.external_attr >> 16) & 0o170000 == 0o120000:
                report.append({"file": name, "outcome": "rejected", "reason": "a link, not a file"})
                continue
            if (
                member.file_size > MAX_COMPRESSION_RATIO * max(member.compress_size, 1)
                and member.file_size > 1 << 20
            ):
                report.append(
                    {
                        "file": name,
                        "outcome": "rejected",
                        "reason": f"compressed {member.file_size // max(member.compress_size, 1):,} to 1 "
                        "(an archive bomb?): not unpacked",
                    }
                )
                continue
            if member.file_size > budget:
                report.append(
                    {"file": name, "outcome": "rejected", "reason": "more than the archive may unpack in all"}
                )
                continue
            target = workdir / f"{number:06d}.part"
            written = 0
            try:
                with bundle.open(member) as source, open(target, "wb") as out:
                    while block := source.read(READ_BLOCK):
                        written += len(block)
                        if written > member.file_size or written > budget:  # lying headers
                            raise Rejected("unpacks to more than its header says")
                        out.write(block)
            except (Rejected, zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                target.unlink(missing_ok=True)
                report.append({"file": name, "outcome": "rejected", "reason": f"cannot be unpacked ({exc})"})
                continue
            budget -= written
            yield name, target
            target.unlink(missing_ok=True)


def expand(
    items: Iterable[tuple[str, Path]], workdir: Path, report: list[dict]
) -> Iterator[tuple[str, Path]]:
    """Files as they are; ZIP archives unpacked (entries named inside the archive)."""
    for name, path in items:
        if zipfile.is_zipfile(path):
            for inner, unpacked in _archive_entries(path, workdir, report):
                yield f"{name}/{inner}", unpacked
        else:
            yield name, path


def run_ingest(run: IngestRun, items: Iterable[tuple[str, Path]], progress=None) -> IngestRun:
    """Ingest `items` ((name, path) pairs, ZIPs unpacked) and complete the run's report."""
    IngestRun.objects.filter(pk=run.pk).update(state=IngestState.RUNNING)
    workdir = Path(settings.PORTAL_DATA_DIR) / "dicom-ingest" / f"run-{run.pk}" / "unpacked"
    workdir.mkdir(parents=True, exist_ok=True)
    report: list[dict] = []
    try:
        for count, (name, path) in enumerate(expand(items, workdir, report), 1):
            report.append(ingest_file(run, name, path))
            if progress and count % 20 == 0:
                progress(None, f"{count:,} files read")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    outcomes = [entry["outcome"] for entry in report]
    run.report = report
    run.accepted = outcomes.count("accepted")
    run.duplicates = outcomes.count("duplicate")
    run.conflicts = outcomes.count("conflict")
    run.rejected = outcomes.count("rejected")
    run.state = IngestState.DONE
    run.finished_at = timezone.now()
    run.message = (
        f"{run.accepted} accepted, {run.duplicates} duplicate(s) skipped, {run.conflicts} conflict(s) kept, "
        f"{run.rejected} rejected"
    )
    run.save()
    refresh_counts(run.project_id, {e["study"] for e in report if e.get("study")} | _conflict_studies(report))
    return run


def _conflict_studies(report: list[dict]) -> set[str]:
    ids = [e["instance"] for e in report if e.get("outcome") == "conflict"]
    return set(Instance.objects.filter(pk__in=ids).values_list("series__study__study_uid", flat=True))


def refresh_counts(project_id: int, study_uids: Iterable[str]) -> None:
    """Instance and series counts and modalities of the studies a run touched."""
    for study in Study.objects.filter(project_id=project_id, study_uid__in=list(study_uids)):
        series = list(study.series.annotate(n=Count("instances")))
        for item in series:
            if item.instance_count != item.n:
                Series.objects.filter(pk=item.pk).update(instance_count=item.n)
        Study.objects.filter(pk=study.pk).update(
            series_count=len(series),
            instance_count=sum(item.n for item in series),
            modalities=sorted({item.modality for item in series if item.modality}),
        )
        check_study_series(study)
