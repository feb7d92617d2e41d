"""DICOMweb through the test client: QIDO matching rules, STOW refusals, and every endpoint for
each role (what a user may not see does not exist here)."""

from __future__ import annotations

import io
import json

import pydicom
import pytest

from imaging.models import IngestRun, Instance, Study
from imaging.services.ingest import run_ingest
from imaging.tests.conftest import dicom_file

pytestmark = pytest.mark.django_db
FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm"]


@pytest.fixture
def indexed(project, people, data_dir):
    run = IngestRun.objects.create(project=project, source="upload", created_by=people["writer"])
    run_ingest(run, [(name, dicom_file(name)) for name in FILES])
    return {name: pydicom.dcmread(dicom_file(name)) for name in FILES}


def uids(response) -> list[str]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/dicom+json"
    return [item["0020000D"]["Value"][0] for item in json.loads(response.content)]


def test_qido_matching(indexed, api):
    client = api("reader")
    ct, mr = indexed["CT_small.dcm"], indexed["MR_small.dcm"]
    everything = uids(client.get("/dicomweb/studies"))
    assert set(everything) == {d.StudyInstanceUID for d in indexed.values()}
    assert uids(
        client.get(f"/dicomweb/studies?StudyInstanceUID={ct.StudyInstanceUID},{mr.StudyInstanceUID}")
    ) == sorted([ct.StudyInstanceUID, mr.StudyInstanceUID], key=everything.index)
    assert uids(client.get("/dicomweb/studies?ModalitiesInStudy=MR")) == [mr.StudyInstanceUID]
    assert uids(client.get(f"/dicomweb/studies?00100020={ct.PatientID}")) == [ct.StudyInstanceUID]
    name = str(ct.PatientName)
    assert ct.StudyInstanceUID in uids(client.get(f"/dicomweb/studies?PatientName={name[:3]}*"))
    assert uids(client.get(f"/dicomweb/studies?PatientName={name[:3].lower()}*")) == uids(
        client.get(f"/dicomweb/studies?PatientName={name[:3]}*")
    )  # names match in any case
    date = ct.StudyDate
    assert ct.StudyInstanceUID in uids(client.get(f"/dicomweb/studies?StudyDate={date}-"))
    assert ct.StudyInstanceUID not in uids(client.get(f"/dicomweb/studies?StudyDate=-{int(date) - 1}"))
    # any attribute, by keyword or tag: here the CT's Manufacturer
    assert uids(client.get(f"/dicomweb/studies?Manufacturer={ct.Manufacturer}")) == [ct.StudyInstanceUID]
    assert len(json.loads(client.get("/dicomweb/studies?limit=2&offset=1").content)) == 2
    study = json.loads(
        client.get(f"/dicomweb/studies?StudyInstanceUID={ct.StudyInstanceUID}&includefield=all").content
    )
    assert study[0]["00201208"]["Value"] == [1] and study[0]["00100020"]["Value"] == [ct.PatientID]
    instances = json.loads(
        client.get(f"/dicomweb/studies/{ct.StudyInstanceUID}/instances?includefield=00180050").content
    )
    assert instances[0]["00180050"]["Value"] == [float(ct.SliceThickness)]
    series = json.loads(client.get("/dicomweb/series?Modality=RTDOSE").content)
    assert series[0]["0020000E"]["Value"] == [indexed["rtdose.dcm"].SeriesInstanceUID]
    for bad in (
        "?limit=x",
        "?offset=-1",
        "?NotAKeyword=1",
        "?StudyDate=2024-01-xx",
        "?includefield=Nonsense",
    ):
        response = client.get(f"/dicomweb/studies{bad}")
        assert response.status_code == 400, bad


def test_wado_metadata_and_bulkdata(indexed, api):
    client = api("reader")
    ct = indexed["CT_small.dcm"]
    base = (
        f"/dicomweb/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}"
    )
    response = client.get(base)
    assert response.status_code == 200 and response["Content-Type"].startswith(
        'multipart/related; type="application/dicom"'
    )
    body = b"".join(response.streaming_content)
    assert dicom_file("CT_small.dcm").read_bytes() in body
    metadata = json.loads(client.get(f"{base}/metadata").content)
    uri = metadata[0]["7FE00010"]["BulkDataURI"]
    assert uri.endswith(f"{base}/bulkdata/7FE00010")
    bulk = client.get(uri.split("testserver", 1)[1])
    assert bulk.status_code == 200 and ct.PixelData in bulk.content
    assert client.get(f"{base}/bulkdata/00100010").status_code == 404  # not a bulk value
    assert client.get("/dicomweb/studies/1.2.3/metadata").status_code == 404


def test_stow_large_parts_and_a_body_over_the_limit(api, project, monkeypatch):
    """Parts larger than what is kept in memory go through files; a body that grows past the
    limit is refused with 400, and the complete parts before the limit are stored and reported."""
    from imaging.dicomweb import views

    client = api("writer")
    url = f"/dicomweb/projects/{project.pk}/studies"
    ct, mr = dicom_file("CT_small.dcm").read_bytes(), dicom_file("MR_small.dcm").read_bytes()
    monkeypatch.setattr(views, "PART_IN_MEMORY", 1024)  # both files are larger: spilled to disk
    body = b"".join(b"--b1\r\nContent-Type: application/dicom\r\n\r\n" + f + b"\r\n" for f in (ct, mr))
    response = client.post(url, data=body + b"--b1--\r\n", content_type="multipart/related; boundary=b1")
    assert response.status_code == 200, response.content
    assert len(json.loads(response.content)["00081199"]["Value"]) == 2

    monkeypatch.setattr(views, "PART_IN_MEMORY", 16 * 1024 * 1024)
    monkeypatch.setattr(views, "READ_BLOCK", 4096)
    other = pydicom.dcmread(dicom_file("CT_small.dcm"))
    other.SOPInstanceUID = other.SOPInstanceUID + ".7"
    buffer = io.BytesIO()
    other.save_as(buffer, enforce_file_format=True)
    monkeypatch.setattr(views, "MAX_STOW_BYTES", len(ct) + 2 * 4096 + 200)
    body = b"".join(
        b"--b1\r\nContent-Type: application/dicom\r\n\r\n" + f + b"\r\n" for f in (buffer.getvalue(), mr, ct)
    )
    response = client.post(url, data=body + b"--b1--\r\n", content_type="multipart/related; boundary=b1")
    assert response.status_code == 400 and b"at most" in response.content
    run = IngestRun.objects.filter(source="stow").latest("pk")
    assert run.state == "failed" and "ended early" in run.message
    assert [e["outcome"] for e in run.report] == ["accepted"]  # the part complete before the limit
    assert Instance.objects.filter(sop_instance_uid=other.SOPInstanceUID).exists()


def test_stow_refusals(indexed, api, project):
    client = api("writer")
    url = f"/dicomweb/projects/{project.pk}/studies"
    assert client.post(url, data=b"x", content_type="application/dicom").status_code == 415
    body = (
        b"--b1\r\nContent-Type: application/dicom\r\n\r\nnot dicom\r\n"
        b"--b1\r\nContent-Type: application/dicom\r\n\r\n"
        + dicom_file("CT_small.dcm").read_bytes()
        + b"\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1--\r\n"
    )
    response = client.post(
        url, data=body, content_type='multipart/related; type="application/dicom"; boundary=b1'
    )
    answer = json.loads(response.content)
    assert response.status_code == 202  # some stored (here: a duplicate), some failed
    assert len(answer["00081199"]["Value"]) == 1 and len(answer["00081198"]["Value"]) == 2
    run = IngestRun.objects.filter(source="stow").latest("pk")
    assert [e["outcome"] for e in run.report] == ["rejected", "duplicate", "rejected"]
    only_bad = client.post(
        url, data=b"--b1\r\n\r\nnope\r\n--b1--\r\n", content_type="multipart/related; boundary=b1"
    )
    assert only_bad.status_code == 409, (only_bad.content, IngestRun.objects.latest("pk").report)
    other_study = client.post(
        f"{url}/1.2.3",
        data=b"--b1\r\nContent-Type: application/dicom\r\n\r\n"
        + dicom_file("MR_small.dcm").read_bytes()
        + b"\r\n--b1--\r\n",
        content_type="multipart/related; boundary=b1",
    )
    assert (
        other_study.status_code == 409
        and "another study" in IngestRun.objects.latest("pk").report[0]["reason"]
    )
    assert (
        client.post("/dicomweb/studies", data=b"", content_type="multipart/related; boundary=b1").status_code
        == 405
    )


ROLES = ["anonymous", "stranger", "reader", "writer", "owner", "admin"]


def test_every_endpoint_for_every_role(indexed, api, project):
    ct = indexed["CT_small.dcm"]
    study, series, sop = ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID
    instance = f"studies/{study}/series/{series}/instances/{sop}"
    reads = [
        f"studies/{study}",
        f"studies/{study}/metadata",
        f"studies/{study}/series/{series}",
        f"studies/{study}/series/{series}/metadata",
        instance,
        f"{instance}/metadata",
        f"{instance}/bulkdata/7FE00010",
    ]
    searches = ["studies", f"studies/{study}/series", "series", "instances", f"studies/{study}/instances"]
    for role in ROLES:
        client = api(role)
        for prefix in ("/dicomweb", f"/dicomweb/projects/{project.pk}"):
            for path in reads:
                status = client.get(f"{prefix}/{path}").status_code
                expected = {"anonymous": (401, 403), "stranger": (404,)}.get(role, (200,))
                assert status in expected, (role, path, status)
            for path in searches:
                response = client.get(f"{prefix}/{path}")
                if role == "anonymous":
                    assert response.status_code in (401, 403)
                elif role == "stranger":
                    assert response.status_code in (200, 404) and (
                        response.status_code == 404 or json.loads(response.content) == []
                    )
                else:
                    assert response.status_code == 200 and json.loads(response.content)
        body = (
            b"--b1\r\nContent-Type: application/dicom\r\n\r\n"
            + dicom_file("rtplan.dcm").read_bytes()
            + b"\r\n--b1--\r\n"
        )
        status = client.post(
            f"/dicomweb/projects/{project.pk}/studies",
            data=body,
            content_type="multipart/related; boundary=b1",
        ).status_code
        expected = {"anonymous": (401, 403), "stranger": (404,), "reader": (403,)}.get(role, (200,))
        assert status in expected, (role, status)
    assert Study.objects.filter(project=project).count() == len(FILES)


def test_frames_rendered_images_and_thumbnails(indexed, api, project, people, data_dir):
    import io

    import numpy as np
    from PIL import Image

    run = IngestRun.objects.create(project=project, source="upload", created_by=people["writer"])
    run_ingest(run, [(n, dicom_file(n)) for n in ("JPEG-lossy.dcm", "SC_rgb_small_odd.dcm")])
    client = api("reader")

    def path(name):
        d = pydicom.dcmread(dicom_file(name))
        return (
            f"/dicomweb/studies/{d.StudyInstanceUID}/series/{d.SeriesInstanceUID}/instances/{d.SOPInstanceUID}",
            d,
        )

    ct_url, ct = path("CT_small.dcm")
    frames = client.get(f"{ct_url}/frames/1")
    assert frames.status_code == 200 and 'type="application/octet-stream"' in frames["Content-Type"]
    assert ct.PixelData in frames.content
    dose_url, dose = path("rtdose.dcm")
    both = client.get(f"{dose_url}/frames/1,2")
    size = dose.Rows * dose.Columns * dose.BitsAllocated // 8
    assert (
        both.status_code == 200
        and dose.PixelData[:size] in both.content
        and dose.PixelData[size : 2 * size] in both.content
    )
    assert client.get(f"{dose_url}/frames/999").status_code == 404
    jpeg_url, _ = path("JPEG-lossy.dcm")
    stored = client.get(f"{jpeg_url}/frames/1", HTTP_ACCEPT='multipart/related; type="image/jpeg"')
    assert 'type="image/jpeg"' in stored["Content-Type"] and b"\xff\xd8" in stored.content

    rendered = client.get(f"{ct_url}/rendered", HTTP_ACCEPT="image/png")
    image = Image.open(io.BytesIO(rendered.content))
    assert (
        rendered["Content-Type"] == "image/png" and image.size == (ct.Columns, ct.Rows) and image.mode == "L"
    )
    narrow = np.asarray(
        Image.open(io.BytesIO(client.get(f"{ct_url}/rendered?window=40,10", HTTP_ACCEPT="image/png").content))
    )
    wide = np.asarray(image)
    assert (narrow == 0).mean() + (narrow == 255).mean() > (wide == 0).mean() + (
        wide == 255
    ).mean()  # more clipped
    rgb_url, rgb = path("SC_rgb_small_odd.dcm")
    colour = Image.open(io.BytesIO(client.get(f"{rgb_url}/rendered", HTTP_ACCEPT="image/jpeg").content))
    assert colour.mode == "RGB"
    thumb = Image.open(io.BytesIO(client.get(f"/dicomweb/studies/{dose.StudyInstanceUID}/thumbnail").content))
    assert max(thumb.size) <= 128
    assert client.get(f"{dose_url}/frames/2/rendered").status_code == 200
    for bad in ("?window=abc", "?window=40,-5", "?viewport=x"):
        assert client.get(f"{ct_url}/rendered{bad}").status_code == 400, bad
    assert client.get(f"{ct_url}/rendered", HTTP_ACCEPT="application/pdf").status_code == 406
    assert api("stranger").get(f"{ct_url}/rendered").status_code == 404
    assert api("anonymous").get(f"{ct_url}/thumbnail").status_code in (401, 403)


def test_compressed_pixel_data_is_decoded_for_rendering(indexed, api, project, people, data_dir):
    import io

    from PIL import Image

    run = IngestRun.objects.create(project=project, source="upload", created_by=people["writer"])
    # (JPEG-lossy.dcm is not here: its JPEG stream is malformed, only GDCM reads it)
    names = ["JPEG2000.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm"]
    run_ingest(run, [(n, dicom_file(n)) for n in names])
    for name in names:
        d = pydicom.dcmread(dicom_file(name))
        series = f"/dicomweb/studies/{d.StudyInstanceUID}/series/{d.SeriesInstanceUID}"
        url = f"{series}/instances/{d.SOPInstanceUID}"
        response = api("reader").get(f"{url}/rendered", HTTP_ACCEPT="image/png")
        assert response.status_code == 200, (name, response.content[:200])
        assert Image.open(io.BytesIO(response.content)).size == (d.Columns, d.Rows)
        raw = api("reader").get(
            f"{url}/frames/1", HTTP_ACCEPT='multipart/related; type="application/octet-stream"'
        )
        assert raw.status_code == 200 and 'type="application/octet-stream"' in raw["Content-Type"], name


def test_metadata_text_is_the_instances_json(indexed, project):
    """WADO-RS metadata put together by PostgreSQL says what the per-instance DICOM JSON says:
    the stored attributes, the index's UIDs and modality, the retrieve URL, bulk data as URLs."""
    from imaging.dicomweb import query

    base = "https://portal.example.org/dicomweb"
    found = Instance.objects.filter(series__study__project=project).select_related("series__study")
    documents = [json.loads(text) for text in query.metadata_documents(found.order_by("pk"), base)]
    expected = [query.instance_json(i, base, everything=True) for i in found.order_by("pk")]
    assert documents == expected and len(documents) == len(FILES)
    with_pixels = [d for d in documents if "7FE00010" in d]
    assert with_pixels and all(d["7FE00010"]["BulkDataURI"].startswith(base) for d in with_pixels)
    # an empty modality is {"vr": "CS"}, as in the JSON made in Python
    series = found.first().series
    type(series).objects.filter(pk=series.pk).update(modality="")
    only = [json.loads(t) for t in query.metadata_documents(found.filter(series=series), base)]
    assert all(d["00080060"] == {"vr": "CS"} for d in only)
