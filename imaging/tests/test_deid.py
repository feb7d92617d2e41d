"""De-identification on ingest: what the basic profile removes or replaces is gone from the stored
files and from DICOMweb answers; pseudonyms are stable across ingests; options keep what they
promise; the re-identification table is encrypted and for project admins only."""

from __future__ import annotations

import datetime as dt
import json

import pydicom
import pytest

from imaging.models import DeidSettings, IngestRun, Instance, Patient, Pseudonym
from imaging.services.deid import actions
from imaging.services.ingest import run_ingest
from imaging.tests.conftest import dicom_file

pytestmark = pytest.mark.django_db
FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "SC_rgb_small_odd.dcm"]


def ingest(project, people, names=FILES):
    run = IngestRun.objects.create(project=project, source="upload", created_by=people["writer"])
    return run_ingest(run, [(n, dicom_file(n)) for n in names])


def identifying(dataset) -> dict[int, object]:
    """Every attribute (top level) the profile acts on, with a value, in the original."""
    table = actions()
    return {int(e.tag): e.value for e in dataset if int(e.tag) in table and e.value not in (None, "", b"")}


def stored_of(original) -> pydicom.Dataset:
    instance = Instance.objects.exclude(sop_instance_uid=original.SOPInstanceUID).get(
        series__modality=original.Modality, sop_class_uid=original.SOPClassUID
    )
    return pydicom.dcmread(instance.full_path), instance


def test_the_basic_profile_leaves_nothing_it_covers_and_pseudonyms_are_stable(project, people, data_dir, api):
    DeidSettings.objects.create(project=project, enabled=True)
    first = ingest(project, people)
    assert first.accepted == len(FILES), first.report
    table = actions()
    for name in FILES:
        original = pydicom.dcmread(dicom_file(name))
        stored, instance = stored_of(original)
        assert stored.PatientIdentityRemoved == "YES"
        assert not any(e.tag.is_private for e in stored)
        for tag, value in identifying(original).items():
            action = table[tag]
            now = stored.get(tag)
            if action == "X":
                assert now is None, (name, f"{tag:08X}")
            else:  # Z (empty, or a dummy as the profile allows), D, U: not the original
                assert now is None or now.value in ("", b"", None) or now.value != value, (name, f"{tag:08X}")
            if action in ("D", "U"):
                assert now is not None and now.value != value, (name, f"{tag:08X}", action)
        # nor in DICOMweb answers: each attribute as the files have it now, none as it was
        client = api("reader")
        metadata = json.loads(
            client.get(
                f"/dicomweb/studies/{stored.StudyInstanceUID}/series/{stored.SeriesInstanceUID}"
                f"/instances/{stored.SOPInstanceUID}/metadata"
            ).content
        )[0]
        study = json.loads(
            client.get(
                f"/dicomweb/studies?StudyInstanceUID={stored.StudyInstanceUID}&includefield=all"
            ).content
        )[0]
        for answer in (metadata, study):
            for tag, value in identifying(original).items():
                entry = answer.get(f"{tag:08X}")
                if entry is None or "Value" not in entry:
                    continue
                assert table[tag] != "X", (name, f"{tag:08X}")
                shown = entry["Value"][0]
                shown = shown.get("Alphabetic", "") if isinstance(shown, dict) else shown
                assert str(shown) != str(
                    value if not isinstance(value, list | pydicom.multival.MultiValue) else value[0]
                ), (name, f"{tag:08X}")
            text = json.dumps(answer)
            assert original.SOPInstanceUID not in text and original.StudyInstanceUID not in text
            assert str(original.PatientID) not in text
        flags = next(e for e in first.report if e["file"] == name)["deidentified"]["flags"]
        if name == "SC_rgb_small_odd.dcm":
            assert flags and "burned-in" in flags[0]

    # The same files again: the same pseudonyms, so duplicates; the same patient pseudonym.
    patients = set(Patient.objects.filter(project=project).values_list("patient_id", flat=True))
    second = ingest(project, people)
    assert second.duplicates == len(FILES) and second.accepted == 0
    assert set(Patient.objects.filter(project=project).values_list("patient_id", flat=True)) == patients
    assert all(p.startswith("PAT-") for p in patients)


def test_options_keep_what_they_promise(project, people, data_dir):
    DeidSettings.objects.create(
        project=project,
        enabled=True,
        options=["retain_longitudinal_dates", "retain_patient_characteristics", "clean_descriptors"],
    )
    ingest(project, people, ["CT_small.dcm"])
    original = pydicom.dcmread(dicom_file("CT_small.dcm"))
    stored, _ = stored_of(original)
    assert stored.PatientSex == original.PatientSex
    shifted = dt.datetime.strptime(stored.StudyDate, "%Y%m%d") - dt.datetime.strptime(
        original.StudyDate, "%Y%m%d"
    )
    assert -3650 <= shifted.days <= -1
    assert stored.StudyTime == original.StudyTime
    assert "retain_longitudinal_dates" in stored.DeidentificationMethod


def test_the_reidentification_table_is_encrypted_and_for_admins(project, people, data_dir, api):
    DeidSettings.objects.create(project=project, enabled=True)
    ingest(project, people, ["CT_small.dcm"])
    original = pydicom.dcmread(dicom_file("CT_small.dcm"))
    stored = Pseudonym.objects.filter(project=project)
    assert stored.filter(kind="patient").count() == 1 and stored.filter(kind="uid").count() >= 3
    assert all(original.PatientID.encode() not in bytes(p.original) for p in stored)
    url = f"/api/v1/imaging/projects/{project.pk}/reidentification/"
    table = api("owner").get(url).json()
    patient = next(row for row in table if row["kind"] == "patient")
    assert patient["original"] == original.PatientID and patient["pseudonym"].startswith("PAT-")
    assert original.SOPInstanceUID in {row["original"] for row in table}
    for role, status in {
        "anonymous": (401, 403),
        "stranger": (404,),
        "reader": (403,),
        "writer": (403,),
        "admin": (200,),
    }.items():
        assert api(role).get(url).status_code in status, role
    settings_url = f"/api/v1/imaging/projects/{project.pk}/deidentification/"
    assert api("reader").get(settings_url).json() == {"enabled": True, "options": []}
    assert api("writer").put(settings_url, {"enabled": False}, format="json").status_code == 403
    bad = api("owner").put(settings_url, {"enabled": True, "options": ["keep_everything"]}, format="json")
    assert bad.status_code == 400 and "Unknown options" in json.dumps(bad.json())
    changed = api("owner").put(
        settings_url, {"enabled": True, "options": ["clean_descriptors"]}, format="json"
    )
    assert changed.status_code == 200 and DeidSettings.objects.get(project=project).options == [
        "clean_descriptors"
    ]
