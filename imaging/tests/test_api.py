"""The imaging API: ingest from finished uploads (files and ZIPs) with a report, and the index of
studies and series; every endpoint for each role."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pydicom
import pytest

from imaging.models import IngestRun, Series, Study
from imaging.tests.conftest import dicom_file
from portal.models import Job
from portal.services.jobs import JOB_KINDS

pytestmark = pytest.mark.django_db
CHUNK = 64 * 1024


def upload(client, name: str, data: bytes) -> int:
    session = client.post(
        "/api/v1/uploads/",
        {"file_name": name, "size": len(data), "purpose": "dicom", "chunk_size": CHUNK},
        format="json",
    ).json()
    for index in range(session["chunk_count"]):
        piece = data[index * CHUNK : (index + 1) * CHUNK]
        response = client.put(
            f"/api/v1/uploads/{session['id']}/chunks/{index}/",
            piece,
            content_type="application/octet-stream",
            HTTP_X_CONTENT_SHA256=hashlib.sha256(piece).hexdigest(),
        )
        assert response.status_code == 200
    assert client.post(f"/api/v1/uploads/{session['id']}/finish/").status_code == 200
    return session["id"]


def run_job(run_id: int) -> IngestRun:
    job = Job.objects.get(kind="imaging.ingest", target_id=run_id)
    JOB_KINDS[job.kind].task.apply(args=[job.pk])
    return IngestRun.objects.get(pk=run_id)


@pytest.fixture
def ingested(api, project, data_dir):
    client = api("writer")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for name in ("MR_small.dcm", "rtplan.dcm", "rtdose.dcm"):
            bundle.writestr(f"export/{name}", dicom_file(name).read_bytes())
        bundle.writestr("export/notes.txt", "not an image\n")
    uploads = [
        upload(client, "export.zip", archive.getvalue()),
        upload(client, "ct.dcm", dicom_file("CT_small.dcm").read_bytes()),
    ]
    response = client.post(
        "/api/v1/imaging/ingests/", {"project": project.pk, "uploads": uploads}, format="json"
    )
    assert response.status_code == 202, response.content
    assert response.json()["job"]["kind"] == "imaging.ingest"
    return run_job(response.json()["id"])


def test_ingest_from_uploads_and_the_report(ingested, api):
    assert (ingested.accepted, ingested.rejected, ingested.state) == (4, 1, "done")
    report = api("reader").get(f"/api/v1/imaging/ingests/{ingested.pk}/").json()
    rejected = [e for e in report["report"] if e["outcome"] == "rejected"]
    assert rejected == [
        {
            "file": "export.zip/export/notes.txt",
            "outcome": "rejected",
            "reason": "not DICOM: found a text file (13 bytes)",
        }
    ]
    assert report["label"] == "2 files" and "4 accepted" in report["message"]


def test_studies_and_series_with_filters(ingested, api, project):
    client = api("reader")
    studies = client.get(f"/api/v1/imaging/studies/?project={project.pk}").json()["results"]
    ct = pydicom.dcmread(dicom_file("CT_small.dcm"))
    assert ct.StudyInstanceUID in {s["study_uid"] for s in studies}
    by_modality = client.get("/api/v1/imaging/studies/?modality=ct").json()["results"]
    assert [s["study_uid"] for s in by_modality] == [ct.StudyInstanceUID]
    assert by_modality[0]["patient"]["name"] == str(ct.PatientName)
    by_patient = client.get(f"/api/v1/imaging/studies/?patient={ct.PatientID}").json()["results"]
    assert ct.StudyInstanceUID in [s["study_uid"] for s in by_patient]
    dated = client.get(f"/api/v1/imaging/studies/?date_from={ct.StudyDate}&date_to={ct.StudyDate}").json()
    assert ct.StudyInstanceUID in [s["study_uid"] for s in dated["results"]]
    assert client.get("/api/v1/imaging/studies/?date_from=2024-01-01").status_code == 400
    assert client.get("/api/v1/imaging/studies/?project=x").status_code == 400
    study = Study.objects.get(study_uid=ct.StudyInstanceUID)
    detail = client.get(f"/api/v1/imaging/studies/{study.pk}/").json()
    assert detail["series"][0]["modality"] == "CT" and detail["instance_count"] == 1
    series = client.get(f"/api/v1/imaging/series/{detail['series'][0]['id']}/").json()
    assert series["instances"][0]["sop_instance_uid"] == ct.SOPInstanceUID


ROLES = ["anonymous", "stranger", "reader", "writer", "owner", "admin"]


def test_every_endpoint_for_every_role(ingested, api, project):
    study = Study.objects.filter(project=project).first()
    series = Series.objects.filter(study=study).first()
    reads = [
        "/api/v1/imaging/ingests/",
        f"/api/v1/imaging/ingests/{ingested.pk}/",
        "/api/v1/imaging/studies/",
        f"/api/v1/imaging/studies/{study.pk}/",
        f"/api/v1/imaging/series/{series.pk}/",
    ]
    for role in ROLES:
        for url in reads:
            response = api(role).get(url)
            if role == "anonymous":
                assert response.status_code in (401, 403), url
            elif role == "stranger":
                assert response.status_code == 404 or response.json()["results"] == [], (
                    url,
                    response.status_code,
                )
            else:
                assert response.status_code == 200, (role, url)
    # starting an ingest: writers and up, with their own finished uploads
    data = dicom_file("MR_small.dcm").read_bytes()
    for role, expected in {
        "anonymous": (401, 403),
        "stranger": (403,),
        "reader": (403,),
        "writer": (202,),
        "owner": (202,),
        "admin": (202,),
    }.items():
        client = api(role)
        uploads = [upload(client, "mr.dcm", data)] if role != "anonymous" else [1]
        response = client.post(
            "/api/v1/imaging/ingests/", {"project": project.pk, "uploads": uploads}, format="json"
        )
        assert response.status_code in expected, (role, response.status_code, response.content)
    mine = upload(api("writer"), "mr.dcm", data)
    runs = IngestRun.objects.count()
    someone_elses = api("owner").post(
        "/api/v1/imaging/ingests/", {"project": project.pk, "uploads": [mine]}, format="json"
    )
    assert someone_elses.status_code == 404 and IngestRun.objects.count() == runs  # nothing started
    for bad in (
        {"project": project.pk, "uploads": []},
        {"project": project.pk},
        {"uploads": [mine]},
        {"project": project.pk, "uploads": ["x"]},
    ):
        assert api("writer").post("/api/v1/imaging/ingests/", bad, format="json").status_code == 400, bad
