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
import io
import os
import re
import shutil
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone
from pydicom.datadict import tag_for_keyword

from imaging.models import DeidSettings, IngestRun, IngestState, Instance, Patient, Series, Study
from imaging.services.dicomjson import Part10, dataset_json, read_part10
from imaging.services.quality import check_study_series, checked_values
from portal.services.files import describe_file

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
REQUIRED_UIDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
BULK_THRESHOLD = 1024  # bytes: larger binary values stay in the file (BulkDataURI)
PIXEL_TAGS = ("7FE00010", "7FE00008", "7FE00009", "54000100")  # pixel data (int, float, double), waveform
PIXEL_TAG_NUMBERS = frozenset(int(tag, 16) for tag in PIXEL_TAGS)
MAX_ARCHIVE_MEMBERS = 100_000
MAX_COMPRESSION_RATIO = 200  # an entry that unpacks to more than this many times its size is refused
READ_BLOCK = 1024 * 1024
BATCH_FILES = 100  # files indexed in one transaction
BATCH_BYTES = 64 * 1024 * 1024  # or fewer, when they are large (their bytes are held until stored)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        block_size = min(
            READ_BLOCK, max(os.fstat(handle.fileno()).st_size, 1)
        )  # no 1 MiB buffer per small file
        while block := handle.read(block_size):
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


# what `IngestBatch.check` needs of a file: its UIDs, image size, and whether it is a DICOMDIR
CHECKED_ON_RECEIPT = frozenset(
    int(tag, 16)
    for tag in (
        "00080016",
        "00080018",
        "0020000D",
        "0020000E",
        "00280010",
        "00280011",
        "00280100",
        "00280002",
        "00280008",
        "00041220",
    )
)
IN_MEMORY = 64 * 1024 * 1024  # files up to this size are read once and parsed from memory


def read_dataset(path: Path, data: bytes | None = None):
    """The parsed file (from `data`, its bytes, when given), or `Rejected` saying why not."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    source = io.BytesIO(data) if data is not None else path

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
        dataset = pydicom.dcmread(source)
    except InvalidDicomError:
        # Without the Part 10 header (preamble, file meta), as some old systems write: taken only
        # if it parses into a dataset with its UIDs.
        try:
            dataset = pydicom.dcmread(io.BytesIO(data) if data is not None else path, force=True)
            if not str(dataset.get("SOPInstanceUID", "") or "").strip() or not UID.match(
                str(dataset.get("SOPClassUID", "") or "").strip()
            ):
                raise InvalidDicomError("no SOP UIDs")
            dataset.headerless = True
        except (InvalidDicomError, *errors):
            raise Rejected(f"not DICOM: found {describe_file(path, data)}") from None
    except errors as exc:
        raise Rejected(f"unreadable or truncated DICOM ({type(exc).__name__}: {exc})"[:500]) from None
    _check_complete(dataset, len(data) if data is not None else path.stat().st_size)
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
        # Elements are kept in the order they were read, so the one read last ends furthest into
        # the file; a sequence of undefined length ends with its last item's last element.
        nonlocal needed
        elements = list(items._dict.values())
        for raw in reversed(elements[-2:]):
            tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
            if tell is not None and length is not None and length != 0xFFFFFFFF:
                needed = max(needed, tell + length)
            if raw.VR == "SQ" and length == 0xFFFFFFFF:
                sequence = items[raw.tag].value or []
                if sequence:
                    walk(sequence[-1])

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


def _bulk_uri(tag: int) -> str:
    return f"bulk:{tag:08X}"


def attributes_json(dataset) -> dict:
    """Every attribute as DICOM JSON; bulk values become references (`BulkDataURI` "bulk:<tag>"),
    pixels always (they stay in the file, however small)."""
    return dataset_json(dataset, BULK_THRESHOLD, _bulk_uri, PIXEL_TAG_NUMBERS)


def _values(dataset, attributes: dict, name: str):
    """The values of a top-level attribute, from the DICOM JSON already made of the dataset."""
    return (attributes.get(f"{tag_for_keyword(name):08X}") or {}).get("Value") or []


def _text(dataset, attributes: dict, name: str, limit: int) -> str:
    values = _values(dataset, attributes, name)
    if len(values) == 1 and isinstance(values[0], str):
        return values[0].strip()[:limit]
    if len(values) == 1 and isinstance(values[0], dict):  # a person name's component groups
        groups = [values[0].get(k, "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
        while groups and not groups[-1]:
            groups.pop()
        return "=".join(groups).strip()[:limit]
    if dataset is None:  # read without pydicom: several values as the file has them
        return "\\".join("" if v is None else str(v) for v in values).strip()[:limit]
    value = dataset.get(name, "") if values else ""  # several values, or a number: as pydicom shows it
    return str(value if value is not None else "").strip()[:limit]


def _int(dataset, attributes: dict, name: str) -> int | None:
    values = _values(dataset, attributes, name)
    if len(values) == 1 and isinstance(values[0], int) and not isinstance(values[0], bool):
        return values[0]
    try:
        value = (values[0] if dataset is None else dataset.get(name)) if values else None
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _same_data_set(stored: Path, received: Path | bytes) -> bool:
    """The two files hold the same data set, however encoded: an instance received by C-STORE (the
    receiver's file meta, the negotiated transfer syntax) and the same one uploaded differ in their
    bytes only. (Asked only when the UIDs match and the bytes do not.)"""
    import pydicom

    try:
        other = pydicom.dcmread(io.BytesIO(received) if isinstance(received, bytes) else received)
        return pydicom.dcmread(stored) == other  # the elements, not the file meta
    except _READ_ERRORS:
        return False


def instance_directory(project_id: int, study_uid: str, series_uid: str) -> Path:
    return Path(settings.PORTAL_DATA_DIR) / "dicom" / str(project_id) / study_uid / series_uid


def ingest_file(run: IngestRun, name: str, path: Path) -> dict:
    """Take one file into the run's project; returns its report entry (with what de-identification
    changed, where the project asks for it)."""
    return IngestBatch(run).ingest([(name, path)])[0]


class Prepared:
    """A file read, checked, de-identified and described, ready to be stored (no database yet)."""

    __slots__ = (
        "name",
        "source",
        "sop_uid",
        "study_uid",
        "series_uid",
        "sha",
        "patient",
        "study",
        "series",
        "instance",
        "deid",
    )

    def __init__(self, **fields):
        for key, value in fields.items():
            setattr(self, key, value)


class IngestBatch:
    """Ingests files for one run: each file is read and described on its own; the database work of
    a batch of files is one transaction (one commit instead of one per instance). What a run has
    already looked up (its project's de-identification settings, patients, studies and series) is
    kept for the next batch."""

    def __init__(self, run: IngestRun, move: bool = False):
        self.run = run
        self.move = move  # files are moved into place (they are ours: a spool), not copied
        self.deid_settings = DeidSettings.objects.filter(project_id=run.project_id, enabled=True).first()
        self.patients: dict[str, int] = {}
        self.studies: dict[str, Study] = {}
        self.series: dict[tuple[int, str], int] = {}

    def ingest(self, items: list[tuple]) -> list[dict]:
        """Report entries for `items`, in their order: (name, path) of a file, or (name, path,
        data[, dataset]) with its bytes (and parsed dataset) held in memory already; without
        `move`, nothing need be at `path` then. The files may be removed afterwards."""
        cleaned: list[Path] = []
        try:
            slots = [self.prepare(name, path, cleaned, *held) for name, path, *held in items]
            return self.entries(slots)
        finally:
            for path in cleaned:
                path.unlink(missing_ok=True)

    def entries(self, slots: list[dict | Prepared]) -> list[dict]:
        """Store the prepared ones of `slots` (the others are report entries already); the report
        entries of all, in order."""
        ready = [slot for slot in slots if isinstance(slot, Prepared)]
        stored = self.store(ready) if ready else {}
        entries = [stored[id(slot)] if isinstance(slot, Prepared) else slot for slot in slots]
        for slot, entry in zip(slots, entries, strict=True):
            deid = slot.deid if isinstance(slot, Prepared) else None
            if deid is not None and entry["outcome"] != "rejected":
                entry["deidentified"] = {
                    "changes": len(deid.changes),
                    "attributes": sorted({c["keyword"] or c["tag"] for c in deid.changes})[:300],
                    "flags": deid.flags,
                }
        return entries

    def prepare(
        self, name: str, path: Path, cleaned: list[Path], data: bytes | None = None, dataset=None
    ) -> dict | Prepared:
        original = path
        if data is None and path.stat().st_size <= IN_MEMORY:
            data = path.read_bytes()  # parsed from memory and hashed once
        if dataset is None and data is not None and self.deid_settings is None:
            read = read_part10(data, BULK_THRESHOLD, _bulk_uri, PIXEL_TAG_NUMBERS)
            if read is not None:  # the common case, without pydicom; else pydicom, below
                return self._prepare_read(name, path, data, read)
        if dataset is None:
            try:
                dataset = read_dataset(path, data)
            except IsIndex as exc:
                return {"file": name, "outcome": "index", "reason": str(exc)}
            except Rejected as exc:
                return {"file": name, "outcome": "rejected", "reason": str(exc)}
        deid = None
        if self.deid_settings is not None:
            from imaging.services.deid import deidentify

            try:
                deid = deidentify(dataset, self.deid_settings)
            except Exception as exc:  # noqa: BLE001 - an odd value must not store identifying data
                reason = f"cannot be de-identified ({exc})"[:500]
                return {"file": name, "outcome": "rejected", "reason": reason}
            rewritten = path.with_name(path.name + ".deid")
            cleaned.append(rewritten)
            _save_part10(dataset, rewritten, keep_meta=True)
            path = rewritten
        elif getattr(dataset, "headerless", False):
            rewritten = path.with_name(path.name + ".part10")
            cleaned.append(rewritten)
            _save_part10(dataset, rewritten)  # stored as a proper DICOM file, for DICOMweb and viewers
            path = rewritten
        try:
            attributes = attributes_json(dataset)
        except Exception as exc:  # noqa: BLE001 - pydicom's many ways to fail on odd values
            return {"file": name, "outcome": "rejected", "reason": f"unreadable attributes ({exc})"[:500]}
        # the stored file's hash: the bytes read above, unless de-identification rewrote them
        sha = hashlib.sha256(data).hexdigest() if data is not None and path == original else file_sha256(path)
        syntax = (
            str(dataset.file_meta.get("TransferSyntaxUID", "") or "") if hasattr(dataset, "file_meta") else ""
        )
        source = data if data is not None and path == original and not self.move else path
        return self._described(name, source, sha, attributes, syntax, dataset, deid)

    def _prepare_read(self, name: str, path: Path, data: bytes, read: Part10) -> dict | Prepared:
        """`prepare` for a file read without pydicom: the same checks on its JSON."""
        refused = self.check_read(name, read)
        if refused is not None:
            return refused
        sha = hashlib.sha256(data).hexdigest()
        source = path if self.move else data
        return self._described(name, source, sha, read.attributes, read.meta_text(0x00020010), None, None)

    def check(self, name: str, path: Path, data: bytes) -> dict | None:
        """Whether `prepare` would take the file, answered quickly where it can be: a report entry
        when not (rejected, or a DICOMDIR), None when it would. (The receiver asks this before it
        answers a C-STORE; the indexer prepares the file later.)"""
        if self.deid_settings is None:
            read = read_part10(data, BULK_THRESHOLD, _bulk_uri, PIXEL_TAG_NUMBERS, only=CHECKED_ON_RECEIPT)
            if read is not None:
                return self.check_read(name, read)
        cleaned: list[Path] = []
        try:
            prepared = self.prepare(name, path, cleaned, data)
        finally:
            for extra in cleaned:
                extra.unlink(missing_ok=True)
        return prepared if isinstance(prepared, dict) else None

    @staticmethod
    def check_read(name: str, read: Part10) -> dict | None:
        attributes = read.attributes
        if read.meta_text(0x00020002) == DICOMDIR_CLASS or "00041220" in attributes:
            return {
                "file": name,
                "outcome": "index",
                "reason": "DICOMDIR: the archive's index (its files are read themselves)",
            }
        uids = {}
        for keyword in REQUIRED_UIDS:
            values = _values(None, attributes, keyword)
            uids[keyword] = str(values[0]).strip() if values and values[0] is not None else ""
        missing = [keyword for keyword, value in uids.items() if not value]
        if missing:
            return {"file": name, "outcome": "rejected", "reason": f"missing UIDs: {', '.join(missing)}"}
        bad = [keyword for keyword, value in uids.items() if not UID.match(value)]
        if bad:
            return {"file": name, "outcome": "rejected", "reason": f"malformed UIDs: {', '.join(bad)}"}
        if read.pixel_length is not None and not read.encapsulated:
            numbers = [_int(None, attributes, k) for k in ("Rows", "Columns", "BitsAllocated")]
            if None in numbers:
                reason = "pixel data without a valid image size (Rows, Columns, BitsAllocated)"
                return {"file": name, "outcome": "rejected", "reason": reason}
            rows, columns, bits = numbers
            samples = _int(None, attributes, "SamplesPerPixel") or 1
            frames = _int(None, attributes, "NumberOfFrames") or 1
            expected = rows * columns * samples * frames * bits // 8
            if read.pixel_length < expected:
                have = read.pixel_length
                reason = f"truncated: the pixel data has {have:,} of the {expected:,} bytes its size needs"
                return {"file": name, "outcome": "rejected", "reason": reason}
        return None

    def _described(self, name, source, sha, attributes, syntax, dataset, deid) -> Prepared:
        def uid(keyword: str) -> str:
            values = _values(dataset, attributes, keyword)
            return str(values[0]).strip() if values else str(dataset.get(keyword, "")).strip()

        return Prepared(
            name=name,
            source=source,
            sop_uid=uid("SOPInstanceUID"),
            study_uid=uid("StudyInstanceUID"),
            series_uid=uid("SeriesInstanceUID"),
            sha=sha,
            deid=deid,
            patient={
                "patient_id": _text(dataset, attributes, "PatientID", 64),
                "name": _text(dataset, attributes, "PatientName", 324),
                "birth_date": _text(dataset, attributes, "PatientBirthDate", 8),
                "sex": _text(dataset, attributes, "PatientSex", 16),
            },
            study={
                "study_date": _text(dataset, attributes, "StudyDate", 8),
                "study_time": _text(dataset, attributes, "StudyTime", 16),
                "description": _text(dataset, attributes, "StudyDescription", 200),
                "accession_number": _text(dataset, attributes, "AccessionNumber", 16),
                "study_id": _text(dataset, attributes, "StudyID", 16),
                "referring_physician": _text(dataset, attributes, "ReferringPhysicianName", 324),
            },
            series={
                "modality": _text(dataset, attributes, "Modality", 16),
                "number": _int(dataset, attributes, "SeriesNumber"),
                "description": _text(dataset, attributes, "SeriesDescription", 200),
                "body_part": _text(dataset, attributes, "BodyPartExamined", 64),
            },
            instance={
                "sop_class_uid": uid("SOPClassUID"),
                "number": _int(dataset, attributes, "InstanceNumber"),
                "transfer_syntax": syntax,
                "rows": _int(dataset, attributes, "Rows"),
                "columns": _int(dataset, attributes, "Columns"),
                "frames": _int(dataset, attributes, "NumberOfFrames") or 1,
                "attributes": attributes,
                "checked": checked_values(attributes),
            },
        )

    def store(self, batch: list[Prepared]) -> dict[int, dict]:
        """Index and place the prepared files in one transaction; report entries by `id(prepared)`."""
        try:
            with transaction.atomic():
                return self._store(batch)
        except IntegrityError:
            # A patient, study or series this run remembered was deleted meanwhile: look again.
            self.patients.clear(), self.studies.clear(), self.series.clear()
            with transaction.atomic():
                return self._store(batch)

    def _store(self, batch: list[Prepared]) -> dict[int, dict]:
        project_id = self.run.project_id
        known: dict[str, list[tuple[int | None, str, Path]]] = {}
        for pk, uid, sha, path in (
            Instance.objects.select_for_update()
            .filter(series__study__project_id=project_id, sop_instance_uid__in={p.sop_uid for p in batch})
            .values_list("pk", "sop_instance_uid", "sha256", "path")
        ):
            known.setdefault(uid, []).append((pk, sha, Path(settings.PORTAL_DATA_DIR) / path))
        entries: dict[int, dict] = {}
        rows: list[tuple[Prepared, Instance, bool]] = []
        conflicting: set[int] = set()
        for item in batch:
            same_uid = known.setdefault(item.sop_uid, [])
            if any(sha == item.sha or _same_data_set(path, item.source) for _, sha, path in same_uid):
                entries[id(item)] = {
                    "file": item.name,
                    "outcome": "duplicate",
                    "reason": "already stored (same UID, same content)",
                    "sop_instance_uid": item.sop_uid,
                }
                continue
            series_id, study = self._series_of(item)
            directory = instance_directory(project_id, item.study_uid, item.series_uid)
            directory.mkdir(parents=True, exist_ok=True)
            file_name = f"{item.sop_uid}.dcm" if not same_uid else f"{item.sop_uid}-{item.sha[:12]}.dcm"
            target = directory / file_name
            partial = directory / f".{file_name}.partial"
            if isinstance(item.source, bytes):
                partial.write_bytes(item.source)
            elif self.move:
                os.replace(item.source, partial)
            else:
                shutil.copyfile(item.source, partial)
            os.replace(partial, target)
            instance = Instance(
                series_id=series_id,
                sop_instance_uid=item.sop_uid,
                path=str(target.relative_to(settings.PORTAL_DATA_DIR)),
                size=target.stat().st_size,
                sha256=item.sha,
                conflict=bool(same_uid),
                ingest=self.run,
                **item.instance,
            )
            conflicting.update(pk for pk, _, _ in same_uid if pk is not None)
            rows.append((item, instance, study))
            same_uid.append((None, item.sha, target))
            if item.deid is not None:
                from imaging.services.deid import record_pseudonyms

                record_pseudonyms(item.deid)
        Instance.objects.bulk_create([instance for _, instance, _ in rows])
        if conflicting:
            Instance.objects.filter(pk__in=conflicting).update(conflict=True)
        for item, instance, (study, created) in rows:
            if instance.conflict:
                entries[id(item)] = {
                    "file": item.name,
                    "outcome": "conflict",
                    "sop_instance_uid": item.sop_uid,
                    "instance": instance.pk,
                    "reason": "an instance with this UID but other content was stored before: both are kept",
                }
            else:
                entries[id(item)] = {
                    "file": item.name,
                    "outcome": "accepted",
                    "sop_instance_uid": item.sop_uid,
                    "instance": instance.pk,
                    "study": study.study_uid,
                    "new_study": created,
                }
        return entries

    def _series_of(self, item: Prepared) -> tuple[int, tuple[Study, bool]]:
        project_id = self.run.project_id
        study = self.studies.get(item.study_uid)
        created = False
        if study is None:
            patient_id = self.patients.get(item.patient["patient_id"])
            if patient_id is None:
                patient, _ = Patient.objects.get_or_create(
                    project_id=project_id,
                    patient_id=item.patient["patient_id"],
                    defaults={k: v for k, v in item.patient.items() if k != "patient_id"},
                )
                patient_id = self.patients[item.patient["patient_id"]] = patient.pk
            study, created = Study.objects.get_or_create(
                project_id=project_id,
                study_uid=item.study_uid,
                defaults={"patient_id": patient_id, **item.study},
            )
            self.studies[item.study_uid] = study
        key = (study.pk, item.series_uid)
        series_id = self.series.get(key)
        if series_id is None:
            series, _ = Series.objects.get_or_create(
                study=study, series_uid=item.series_uid, defaults=item.series
            )
            series_id = self.series[key] = series.pk
        return series_id, (study, created)


def _archive_entries(
    archive: Path, workdir: Path, report: list[dict], keep: bool = False
) -> Iterator[tuple[str, Path]]:
    """Unpack a ZIP safely into `workdir`, one entry at a time; refused entries are reported. Each
    unpacked file is removed when the next is asked for, unless `keep` (then the caller does)."""
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
            if not keep:
                target.unlink(missing_ok=True)


def expand(
    items: Iterable[tuple[str, Path]], workdir: Path, report: list[dict], keep: bool = False
) -> Iterator[tuple[str, Path]]:
    """Files as they are; ZIP archives unpacked into `workdir` (entries named inside the archive;
    with `keep`, unpacked files stay until the caller removes them)."""
    for name, path in items:
        if zipfile.is_zipfile(path):
            for inner, unpacked in _archive_entries(path, workdir, report, keep):
                yield f"{name}/{inner}", unpacked
        else:
            yield name, path


def run_ingest(run: IngestRun, items: Iterable[tuple[str, Path]], progress=None) -> IngestRun:
    """Ingest `items` ((name, path) pairs, ZIPs unpacked) and complete the run's report."""
    IngestRun.objects.filter(pk=run.pk).update(state=IngestState.RUNNING)
    workdir = Path(settings.PORTAL_DATA_DIR) / "dicom-ingest" / f"run-{run.pk}" / "unpacked"
    workdir.mkdir(parents=True, exist_ok=True)
    report: list[dict] = []
    batch = IngestBatch(run)
    pending: list[tuple[str, Path]] = []
    pending_bytes = 0
    count = 0

    def flush() -> None:
        nonlocal pending_bytes, count
        report.extend(batch.ingest(pending))
        count += len(pending)
        for _name, path in pending:
            if path.is_relative_to(workdir):  # unpacked from an archive: ours to remove
                path.unlink(missing_ok=True)
        pending.clear()
        pending_bytes = 0
        if progress:
            progress(None, f"{count:,} files read")

    try:
        for name, path in expand(items, workdir, report, keep=True):
            pending.append((name, path))
            pending_bytes += path.stat().st_size
            if len(pending) >= BATCH_FILES or pending_bytes >= BATCH_BYTES:
                flush()
        if pending:
            flush()
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
