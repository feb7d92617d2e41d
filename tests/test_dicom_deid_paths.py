"""De-identification on the network paths: instances stored by STOW-RS (the real `dicomweb-client`
against the running portal) and sent by C-STORE (pynetdicom's storescu to the real receiver) into
a project that de-identifies are stored, indexed and served (QIDO-RS, WADO-RS metadata and the
retrieved files) without anything the basic profile removes or replaces; their pseudonyms are the
ones an upload of the same files into the same project gives; each run reports what changed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from imaging.models import DeidSettings, IngestRun, Instance, Patient
from imaging.services.deid import action_for, actions
from imaging.services.ingest import run_ingest
from imaging.services.receiver import build_server
from imaging.tests.test_deid import identifying
from metadata.services.projects import create_project
from portal.models import User
from tests.test_dicom_receiver import free_port, storescu
from tests.test_dicomweb_e2e import client_for, token_for

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FILES = ["CT_small.dcm", "MR_small.dcm"]


@pytest.fixture
def owner():
    return User.objects.create_user("olga")


@pytest.fixture
def deid_project(owner):
    project = create_project(name="De-identified cohort", description="", owner=owner)
    DeidSettings.objects.create(project=project, enabled=True)
    return project


def originals() -> dict[str, pydicom.Dataset]:
    return {name: pydicom.dcmread(get_testdata_file(name)) for name in FILES}


def original_uids(dataset) -> set[str]:
    """Every UID the profile replaces (action U), at any depth of the dataset."""
    found = set()
    for element in dataset.iterall():
        if element.VR == "UI" and action_for(int(element.tag)) == "U" and element.value:
            values = element.value if element.VM > 1 else [element.value]
            found |= {str(v) for v in values}
    return found


def assert_deidentified(original, dataset, where: str) -> None:
    """What test_deid asserts of stored files: each attribute the profile acts on is removed (X),
    emptied or replaced (Z), or replaced (D, U); no private attributes; marked as de-identified."""
    table = actions()
    assert dataset.PatientIdentityRemoved == "YES", where
    assert not any(e.tag.is_private for e in dataset), where
    for tag, value in identifying(original).items():
        action, now = table[tag], dataset.get(tag)
        if action == "X":
            assert now is None, (where, f"{tag:08X}")
        else:
            assert now is None or now.value in ("", b"", None) or now.value != value, (where, f"{tag:08X}")
        if action in ("D", "U"):
            assert now is not None and now.value != value, (where, f"{tag:08X}", action)
    leftover = original_uids(original) & {str(e.value) for e in dataset.iterall() if e.VR == "UI"}
    assert not leftover, (where, leftover)


def assert_json_deidentified(original, answer: dict, where: str) -> None:
    """A DICOM JSON answer shows no original value of an attribute the profile acts on."""
    table = actions()
    for tag, value in identifying(original).items():
        entry = answer.get(f"{tag:08X}")
        if entry is None or "Value" not in entry:
            continue
        assert table[tag] != "X", (where, f"{tag:08X}")
        shown = entry["Value"][0]
        shown = shown.get("Alphabetic", "") if isinstance(shown, dict) else shown
        first = value[0] if isinstance(value, list | pydicom.multival.MultiValue) else value
        assert str(shown) != str(first), (where, f"{tag:08X}")
    text = json.dumps(answer)
    for secret in original_uids(original) | {str(original.PatientID), str(original.PatientName)}:
        assert secret not in text, (where, secret)


def check_run(run: IngestRun, expected: int) -> dict[str, dict]:
    """The run stored `expected` instances, each entry with its de-identification summary."""
    run.refresh_from_db()
    assert run.state == "done" and run.accepted == expected, run.report
    entries = [e for e in run.report if e["outcome"] == "accepted"]
    for entry in entries:
        summary = entry.get("deidentified")
        assert summary and summary["changes"] > 0, entry
        assert {"PatientName", "PatientID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"} <= set(
            summary["attributes"]
        ), entry
        assert isinstance(summary["flags"], list)
    return {e["sop_instance_uid"]: e for e in entries}


def check_stored_and_served(project, base: str, token: str, stored_uids) -> dict[str, pydicom.Dataset]:
    """Each original's instance: the stored file, QIDO-RS (studies, series, instances with every
    field), WADO-RS metadata and the retrieved file carry no identifying original value.
    Returns the stored datasets by file name."""
    client = client_for(base, token)
    found = {}
    for name, original in originals().items():
        instance = Instance.objects.select_related("series__study__patient").get(
            series__study__project=project,
            sop_class_uid=original.SOPClassUID,
            sop_instance_uid__in=stored_uids,
        )
        stored = pydicom.dcmread(instance.full_path)
        assert_deidentified(original, stored, f"{name}: stored file")
        assert instance.sop_instance_uid == stored.SOPInstanceUID != original.SOPInstanceUID
        assert instance.series.study.patient.patient_id == stored.PatientID
        assert instance.series.study.patient.patient_id.startswith("PAT-")
        study, series, sop = stored.StudyInstanceUID, stored.SeriesInstanceUID, stored.SOPInstanceUID

        studies = client.search_for_studies(search_filters={"StudyInstanceUID": study}, fields=["all"])
        assert len(studies) == 1
        assert_json_deidentified(original, studies[0], f"{name}: QIDO studies")
        for series_answer in client.search_for_series(study_instance_uid=study):
            assert_json_deidentified(original, series_answer, f"{name}: QIDO series")
        instances = client.search_for_instances(study_instance_uid=study, fields=["all"])
        assert [i["00080018"]["Value"][0] for i in instances] == [sop]
        assert_json_deidentified(original, instances[0], f"{name}: QIDO instances")
        # the originals find nothing
        assert client.search_for_studies(search_filters={"PatientID": str(original.PatientID)}) == []
        assert client.search_for_studies(search_filters={"StudyInstanceUID": original.StudyInstanceUID}) == []

        metadata = client.retrieve_instance_metadata(study, series, sop)
        assert metadata["00100020"]["Value"] == [stored.PatientID]
        assert_json_deidentified(original, metadata, f"{name}: WADO-RS metadata")
        retrieved = client.retrieve_instance(study, series, sop)
        assert_deidentified(original, retrieved, f"{name}: WADO-RS instance")
        assert retrieved.PixelData == original.PixelData  # pixels untouched
        body = requests.get(
            metadata["00081190"]["Value"][0],
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": 'multipart/related; type="application/dicom"',
            },
            timeout=30,
        ).content
        for raw in (body, instance.full_path.read_bytes()):  # the bytes served and stored
            for secret in original_uids(original) | {str(original.PatientID), str(original.PatientName)}:
                assert secret.encode() not in raw, (name, secret)
        found[name] = stored
    return found


def upload_same_files(project, owner, stored: dict[str, pydicom.Dataset]) -> dict[str, str]:
    """An upload of the same files into the same project gives the same pseudonyms: the same
    UIDs, the same patient, the same de-identified data set. Returns each file's outcome."""
    patients = set(Patient.objects.filter(project=project).values_list("patient_id", flat=True))
    run = IngestRun.objects.create(project=project, source="upload", created_by=owner)
    run_ingest(run, [(name, Path(get_testdata_file(name))) for name in FILES])
    by_file = {e["file"]: e for e in run.report}
    for name, dataset in stored.items():
        entry = by_file[name]
        assert entry["sop_instance_uid"] == dataset.SOPInstanceUID, (name, entry)
        assert entry["outcome"] in ("duplicate", "conflict"), (name, entry)
        if entry["outcome"] == "conflict":  # stored again: the same data set, element by element
            again = pydicom.dcmread(Instance.objects.get(pk=entry["instance"]).full_path)
            assert again == dataset, name  # (Dataset equality leaves the file meta out)
    assert set(Patient.objects.filter(project=project).values_list("patient_id", flat=True)) == patients
    return {name: entry["outcome"] for name, entry in by_file.items()}


def test_stow_rs_stores_deidentified_instances(asgi_server, deid_project, owner):
    base = f"{asgi_server.url}/dicomweb"
    token = token_for(owner)
    answer = client_for(f"{base}/projects/{deid_project.pk}", token).store_instances(
        list(originals().values())
    )
    assert len(answer.ReferencedSOPSequence) == len(FILES) and "FailedSOPSequence" not in answer
    referenced = {str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence}
    assert not referenced & {d.SOPInstanceUID for d in originals().values()}
    entries = check_run(IngestRun.objects.get(project=deid_project, source="stow"), len(FILES))
    assert set(entries) == referenced
    stored = check_stored_and_served(deid_project, base, token, referenced)
    assert upload_same_files(deid_project, owner, stored) == dict.fromkeys(FILES, "duplicate")


def test_c_store_stores_deidentified_instances(asgi_server, deid_project, owner, settings):
    settings.IMAGING_AE_ROUTES = f"DEID_LAB:{deid_project.pk}"
    port = free_port()
    server = build_server(port, "PORTAL", block=False)
    try:
        sent = storescu(port, "DEID_LAB", *[get_testdata_file(name) for name in FILES])
        assert sent.returncode == 0, sent.stderr
        deadline = time.monotonic() + 20  # the run is completed when the association closes
        while time.monotonic() < deadline:
            if IngestRun.objects.filter(project=deid_project, source="network", state="done").exists():
                break
            time.sleep(0.1)
    finally:
        server.shutdown()
    entries = check_run(IngestRun.objects.get(project=deid_project, source="network"), len(FILES))
    base = f"{asgi_server.url}/dicomweb"
    token = token_for(owner)
    stored = check_stored_and_served(deid_project, base, token, set(entries))
    outcomes = upload_same_files(deid_project, owner, stored)
    assert outcomes == dict.fromkeys(FILES, "duplicate")
