"""Ingest: pydicom's test files of many kinds land in the right hierarchy; duplicates, conflicts,
bad files and hostile archives are reported file by file and lose nothing else."""

from __future__ import annotations

import io
import zipfile

import pydicom
import pytest

from imaging.models import IngestRun, Instance, Series, Study
from imaging.services.ingest import run_ingest
from imaging.tests.conftest import dicom_file

pytestmark = pytest.mark.django_db

KINDS = {
    "CT_small.dcm": "CT",
    "MR_small.dcm": "MR",
    "rtplan.dcm": "RTPLAN",
    "rtstruct.dcm": "RTSTRUCT",
    "rtdose.dcm": "RTDOSE",  # multi-frame
    "SC_rgb_small_odd.dcm": "OT",  # secondary capture, RGB
    "JPEG-lossy.dcm": "NM",  # JPEG-compressed
    "test-SR.dcm": "SR",
}


def new_run(project, people, source="upload"):
    return IngestRun.objects.create(project=project, source=source, created_by=people["writer"])


def outcomes(run) -> dict[str, tuple[str, str]]:
    return {entry["file"]: (entry["outcome"], entry.get("reason", "")) for entry in run.report}


def test_many_kinds_of_files_land_in_the_hierarchy(project, people, data_dir):
    run = run_ingest(new_run(project, people), [(name, dicom_file(name)) for name in KINDS])
    assert run.state == "done" and run.accepted == len(KINDS) and run.rejected == 0, run.report
    for name, modality in KINDS.items():
        source = pydicom.dcmread(dicom_file(name), force=True)
        instance = Instance.objects.select_related("series__study__patient").get(
            sop_instance_uid=source.SOPInstanceUID
        )
        assert instance.series.series_uid == source.SeriesInstanceUID
        assert instance.series.study.study_uid == source.StudyInstanceUID
        assert instance.series.modality == modality, name
        stored = instance.full_path.read_bytes()
        if name == "rtstruct.dcm":  # written without the Part 10 header: stored as a proper file
            assert (
                stored[128:132] == b"DICM"
                and pydicom.dcmread(instance.full_path).SOPInstanceUID == source.SOPInstanceUID
            )
        else:
            assert stored == dicom_file(name).read_bytes()
        assert instance.attributes["0020000D"]["Value"] == [source.StudyInstanceUID]
        if "PixelData" in source:
            assert instance.attributes["7FE00010"] == {
                "vr": instance.attributes["7FE00010"]["vr"],
                "BulkDataURI": "bulk:7FE00010",
            }
    dose = Instance.objects.get(sop_instance_uid=pydicom.dcmread(dicom_file("rtdose.dcm")).SOPInstanceUID)
    assert dose.frames > 1
    ct = Study.objects.get(study_uid=pydicom.dcmread(dicom_file("CT_small.dcm")).StudyInstanceUID)
    assert ct.instance_count >= 1 and "CT" in ct.modalities and ct.patient.name
    assert Series.objects.filter(study=ct).count() == ct.series_count


def test_duplicates_are_skipped_and_conflicts_kept_and_flagged(project, people, data_dir, tmp_path):
    run_ingest(new_run(project, people), [("ct.dcm", dicom_file("CT_small.dcm"))])
    changed = pydicom.dcmread(dicom_file("CT_small.dcm"))
    changed.StudyDescription = "edited elsewhere"
    other = tmp_path / "ct-other.dcm"
    changed.save_as(other)
    second = run_ingest(
        new_run(project, people), [("ct.dcm", dicom_file("CT_small.dcm")), ("other.dcm", other)]
    )
    assert outcomes(second)["ct.dcm"][0] == "duplicate"
    assert outcomes(second)["other.dcm"][0] == "conflict"
    both = Instance.objects.filter(sop_instance_uid=changed.SOPInstanceUID)
    assert both.count() == 2 and all(i.conflict for i in both)
    assert len({i.path for i in both}) == 2 and all(i.full_path.exists() for i in both)
    assert (second.duplicates, second.conflicts, second.accepted) == (1, 1, 0)


def test_bad_files_are_rejected_with_reasons_and_the_rest_is_taken(project, people, data_dir, tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("patient list\n")
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    data = dicom_file("CT_small.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 2])
    no_uid = pydicom.dcmread(dicom_file("MR_small.dcm"))
    del no_uid.SOPInstanceUID
    del no_uid.SeriesInstanceUID
    missing = tmp_path / "missing.dcm"
    no_uid.save_as(missing)
    run = run_ingest(
        new_run(project, people),
        [
            ("notes.dcm", text),
            ("empty.dcm", empty),
            ("cut.dcm", cut),
            ("missing.dcm", missing),
            ("rtplan_truncated.dcm", dicom_file("rtplan_truncated.dcm")),
            ("good.dcm", dicom_file("rtplan.dcm")),
        ],
    )
    found = outcomes(run)
    assert found["notes.dcm"] == ("rejected", "not DICOM: found a text file (13 bytes)")
    assert found["empty.dcm"][0] == "rejected" and "empty" in found["empty.dcm"][1]
    assert found["cut.dcm"][0] == "rejected" and "truncated" in found["cut.dcm"][1]
    assert found["missing.dcm"] == ("rejected", "missing UIDs: SOPInstanceUID, SeriesInstanceUID")
    assert found["rtplan_truncated.dcm"][0] == "rejected"
    assert found["good.dcm"][0] == "accepted"
    assert run.rejected == 5 and run.accepted == 1 and Instance.objects.count() == 1


def test_archives_with_dicomdir_and_hostile_entries(project, people, data_dir, tmp_path):
    folder = dicom_file("dicomdirtests")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and "DICOMDIR-" not in p.name)
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in files:
            bundle.write(path, str(path.relative_to(folder)))
        bundle.writestr("../../escape.dcm", dicom_file("CT_small.dcm").read_bytes())
        bundle.writestr("/etc/absolute.dcm", b"x")
        bundle.writestr("zeros.bin", b"\0" * (30 * 1024 * 1024))  # compresses about 1000 to 1
    run = run_ingest(new_run(project, people, "archive"), [("study.zip", archive)])
    found = outcomes(run)
    images = [p for p in files if p.name != "DICOMDIR" and not p.name.startswith("README")]
    assert run.accepted == len(images), [e for e in run.report if e["outcome"] != "accepted"]
    assert found["study.zip/DICOMDIR"][0] == "index" and found["study.zip/TINY_ALPHA/DICOMDIR"][0] == "index"
    assert found["study.zip/README.txt"] == ("rejected", "not DICOM: found a text file (719 bytes)")
    assert found["../../escape.dcm"] == ("rejected", "a path leaving the archive")
    assert found["/etc/absolute.dcm"] == ("rejected", "a path leaving the archive")
    assert found["zeros.bin"][0] == "rejected" and "archive bomb" in found["zeros.bin"][1]
    assert not (tmp_path.parent / "escape.dcm").exists()
    patients = {i.series.study.patient_id for i in Instance.objects.select_related("series__study")}
    assert len(patients) >= 2  # the archive holds several patients, each with its studies
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04" + io.BytesIO(b"garbage" * 10).getvalue())
    again = run_ingest(new_run(project, people, "archive"), [("broken.zip", broken)])
    assert again.rejected == 1 and again.accepted == 0
