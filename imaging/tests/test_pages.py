"""The study pages: list with filters, study page with series, quality and reports, linking the
patient, the ZIP download with a DICOMDIR; access."""

from __future__ import annotations

import io
import zipfile

import pydicom
import pytest

from imaging.models import IngestRun, Study
from imaging.services.ingest import run_ingest
from imaging.tests.conftest import dicom_file
from metadata.services.entities import create_entities

pytestmark = pytest.mark.django_db


@pytest.fixture
def indexed(project, people, data_dir):
    run = IngestRun.objects.create(project=project, source="upload", created_by=people["writer"])
    run_ingest(run, [(n, dicom_file(n)) for n in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")])
    return Study.objects.get(study_uid=pydicom.dcmread(dicom_file("CT_small.dcm")).StudyInstanceUID)


def test_the_list_and_its_filters(indexed, web):
    html = web("reader").get("/studies/").content.decode()
    assert indexed.patient.name in html and "3 studies" in html
    only_ct = web("reader").get("/studies/?modality=CT").content.decode()
    assert "1 study" in only_ct and f"/studies/{indexed.pk}/" in only_ct
    assert "0 studies" in web("stranger").get("/studies/").content.decode()
    assert web("anonymous").get("/studies/").status_code == 302


def test_the_study_page_and_linking_the_patient(indexed, web, project, people, settings):
    settings.IMAGING_OHIF_URL = "https://ohif.example.org/viewer?StudyInstanceUIDs={study}"
    html = web("reader").get(f"/studies/{indexed.pk}/").content.decode()
    assert "Quality checks passed." in html and "CT_small.dcm: accepted" in html
    assert f"https://ohif.example.org/viewer?StudyInstanceUIDs={indexed.study_uid}" in html
    assert 'name="sample"' not in html  # readers look only
    (patient,) = create_entities(project.entity_kinds.get(key="patient"), 1, user=people["writer"])
    web("writer").post(f"/studies/{indexed.pk}/", {"sample": patient.pk})
    indexed.patient.refresh_from_db()
    assert indexed.patient.sample == patient
    assert web("stranger").get(f"/studies/{indexed.pk}/").status_code == 404
    assert web("reader").post(f"/studies/{indexed.pk}/", {"sample": ""}).status_code == 404


def test_download_as_zip_with_dicomdir(indexed, web):
    response = web("reader").get(f"/studies/{indexed.pk}/download/")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    data = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert "DICOMDIR" in names and len(names) == 2
        dicomdir = pydicom.dcmread(io.BytesIO(archive.read("DICOMDIR")))
        assert len(dicomdir.DirectoryRecordSequence) >= 4  # patient, study, series, image
        image = pydicom.dcmread(io.BytesIO(archive.read([n for n in names if n != "DICOMDIR"][0])))
        assert image.StudyInstanceUID == indexed.study_uid
    series = indexed.series.first()
    assert web("reader").get(f"/studies/{indexed.pk}/series/{series.pk}/download/").status_code == 200
    assert web("reader").get(f"/studies/{indexed.pk}/series/999999/download/").status_code == 404
    assert web("stranger").get(f"/studies/{indexed.pk}/download/").status_code == 404


def test_the_add_page(web, project):
    html = web("writer").get("/studies/add/").content.decode()
    assert "Send and index" in html and project.name in html and "PROJECT&lt;id&gt;" in html
    assert "writer or admin" in web("reader").get("/studies/add/").content.decode()


def test_the_stack_follows_the_slice_positions_not_the_files(project, people, data_dir, tmp_path, web):
    from imaging.web import stack_order

    base = pydicom.dcmread(dicom_file("CT_small.dcm"))
    items = []
    # instance numbers in one order, positions along the normal in another
    for position, (number, z) in enumerate([(1, 30.0), (2, 10.0), (3, 20.0)]):
        copy = pydicom.dcmread(dicom_file("CT_small.dcm"))
        copy.SOPInstanceUID = f"{base.SOPInstanceUID}.{position + 1}"
        copy.InstanceNumber = number
        copy.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        copy.ImagePositionPatient = [0, 0, z]
        path = tmp_path / f"z{position}.dcm"
        copy.save_as(path)
        items.append((path.name, path))
    run = IngestRun.objects.create(project=project, source="upload", created_by=people["writer"])
    run_ingest(run, items)
    study = Study.objects.get(study_uid=base.StudyInstanceUID)
    ordered = stack_order(list(study.series.get().instances.all()))
    assert [i.number for i in ordered] == [2, 3, 1]
    html = web("reader").get(f"/studies/{study.pk}/view/").content.decode()
    assert "viewer-config" in html and "Tags" in html
    tags = web("reader").get(f"/studies/{study.pk}/instances/{ordered[0].pk}/tags/").json()
    assert ["00100020", "PatientID", "LO", str(base.PatientID)] in tags["rows"]
    assert any(row[1] == "PixelData" and "bytes" in row[3] for row in tags["rows"])
    assert web("stranger").get(f"/studies/{study.pk}/view/").status_code == 404
    assert web("stranger").get(f"/studies/{study.pk}/instances/{ordered[0].pk}/tags/").status_code == 404
