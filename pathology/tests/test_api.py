"""The slides API: adding a slide runs its conversion; tiles, Deep Zoom, regions, images and
annotations; duplicates; bad files; every endpoint for each role."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from metadata.services.projects import create_project
from pathology.models import Pyramid, Slide, SlideState
from pathology.pyramid import SlidePyramid
from pathology.services import slides as slide_service
from pathology.tests.conftest import BIG, TILE, run_conversion

pytestmark = pytest.mark.django_db


def add(api, role, project, path, name="", **extra):
    with open(path, "rb") as handle:
        upload = SimpleUploadedFile(path.name, handle.read())
    return api(role).post(
        "/api/v1/slides/", {"project": project.pk, "file": upload, "name": name, **extra}, format="multipart"
    )


@pytest.fixture
def ready(api, project, slide_files, small_tiles):
    response = add(api, "writer", project, slide_files["generic"], name="Tumour block A")
    assert response.status_code == 201, response.content
    slide = Slide.objects.get(pk=response.json()["id"])
    assert slide.state == SlideState.UPLOADED
    job = run_conversion(slide)
    assert job.state == "succeeded", job.error
    assert slide.state == SlideState.READY
    return slide


def test_adding_a_slide_converts_it(ready, api, slide_files):
    body = api("reader").get(f"/api/v1/slides/{ready.pk}/").json()
    assert body["state"] == "ready" and body["name"] == "Tumour block A" and body["file_name"] == "tissue.tif"
    assert body["sha256"] == slide_service.file_sha256(slide_files["generic"])
    pyramid = body["pyramid"]
    assert (pyramid["width"], pyramid["height"], pyramid["levels"], pyramid["tile_size"]) == (
        3000,
        2200,
        5,
        TILE,
    )
    assert pyramid["mpp_x"] == 0.25 and pyramid["tissue_tiles"] > 10 and pyramid["removed_island_tiles"] == 1
    assert body["dzi"] == f"/api/v1/slides/{ready.pk}/deepzoom.dzi"
    assert "tissue tiles" in body["message"]


def test_deep_zoom_tiles_regions_and_images(ready, api):
    client = api("reader")
    dzi = client.get(f"/api/v1/slides/{ready.pk}/deepzoom.dzi")
    assert dzi.status_code == 200 and b'TileSize="256"' in dzi.content and b'Width="3000"' in dzi.content
    # Deep Zoom level 12 is full resolution (2^12 ≥ 3000): a tissue tile is the stored one.
    x, y = int(BIG.cx // TILE), int(BIG.cy // TILE)
    full = client.get(f"/api/v1/slides/{ready.pk}/deepzoom_files/12/{x}_{y}.jpeg")
    assert full.status_code == 200 and full["Content-Type"] == "image/jpeg"
    assert full.content == SlidePyramid(ready.pyramid.full_path).tile(4, x, y)
    assert "private" in full["Cache-Control"] and full["ETag"]
    again = client.get(
        f"/api/v1/slides/{ready.pk}/deepzoom_files/12/{x}_{y}.jpeg", HTTP_IF_NONE_MATCH=full["ETag"]
    )
    assert again.status_code == 304
    # an edge tile is cut to the image; the lowest levels are tiny; background tiles are white
    edge = Image.open(
        io.BytesIO(client.get(f"/api/v1/slides/{ready.pk}/deepzoom_files/12/11_8.jpeg").content)
    )
    assert edge.size == (3000 - 11 * TILE, 2200 - 8 * TILE)
    assert Image.open(
        io.BytesIO(client.get(f"/api/v1/slides/{ready.pk}/deepzoom_files/0/0_0.jpeg").content)
    ).size == (1, 1)
    assert Image.open(
        io.BytesIO(client.get(f"/api/v1/slides/{ready.pk}/deepzoom_files/6/0_0.jpeg").content)
    ).size == (47, 35)
    white = np.asarray(Image.open(io.BytesIO(client.get(f"/api/v1/slides/{ready.pk}/tiles/4/0/8").content)))
    assert white.shape == (TILE, TILE, 3) and white.min() > 250
    assert client.get(f"/api/v1/slides/{ready.pk}/deepzoom_files/12/12_0.jpeg").status_code == 404
    assert client.get(f"/api/v1/slides/{ready.pk}/deepzoom_files/13/0_0.jpeg").status_code == 404
    assert client.get(f"/api/v1/slides/{ready.pk}/tiles/5/0/0").status_code == 404
    # regions: the same pixels as the reader class, as PNG or numpy
    url = f"/api/v1/slides/{ready.pk}/region?x=600&y=500&width=300&height=200"
    array = np.load(io.BytesIO(client.get(url + "&format=npy").content), allow_pickle=False)
    with SlidePyramid(ready.pyramid.full_path) as reader:
        assert np.array_equal(array, reader.read_region(4, 600, 500, 300, 200))
        assert np.array_equal(
            np.asarray(Image.open(io.BytesIO(client.get(url).content))),
            reader.read_region(4, 600, 500, 300, 200),
        )
        low = np.load(io.BytesIO(client.get(url + "&level=2&format=npy").content))
        assert np.array_equal(low, reader.read_region(2, 600, 500, 300, 200))
    for bad in ("&level=9", "&format=gif", "&width=0", "&x=-1", "&width=100000&height=100000", "&x=a"):
        response = client.get(url + bad)
        assert response.status_code == 400, bad
    thumbnail = client.get(f"/api/v1/slides/{ready.pk}/images/thumbnail")
    assert thumbnail.status_code == 200 and Image.open(io.BytesIO(thumbnail.content)).size == (188, 138)
    assert client.get(f"/api/v1/slides/{ready.pk}/images/label").status_code == 404


def test_the_same_file_again_is_not_converted_again(ready, api, project, slide_files):
    response = add(api, "writer", project, slide_files["generic"], name="Block A, again")
    second = Slide.objects.get(pk=response.json()["id"])
    run_conversion(second)
    assert second.state == SlideState.READY and second.pyramid_id == ready.pyramid_id
    assert second.duplicate_of_id == ready.pk and "not converted again" in second.message
    assert Pyramid.objects.count() == 1
    # other filter settings are another pyramid
    job = api("writer").post(
        f"/api/v1/slides/{second.pk}/convert/", {"options": {"min_island_tiles": 1}}, format="json"
    )
    assert job.status_code == 202, job.content
    run_conversion(second)
    assert second.state == SlideState.READY and second.pyramid_id != ready.pyramid_id
    assert second.pyramid.removed_island_tiles == 0 and second.options == {"min_island_tiles": 1}


def test_bad_files_fail_with_a_message_and_leave_other_slides_alone(
    ready, api, project, tmp_path, small_tiles
):
    cases = {
        "notes.svs": b"sample,stain\nS1,HE\n",
        "cut.svs": ready.source_full_path.read_bytes()[:50_000],
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        response = add(api, "writer", project, path)
        assert response.status_code == 201, response.content
        slide = Slide.objects.get(pk=response.json()["id"])
        job = run_conversion(slide)
        assert job.state == "failed" and slide.state == SlideState.FAILED
        assert slide.message and job.error.startswith(slide.message[:40])
    assert "found a text file" in Slide.objects.get(file_name="notes.svs").message
    assert "cut off" in Slide.objects.get(file_name="cut.svs").message
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    response = add(api, "writer", project, empty)
    assert response.status_code == 400 and "empty" in str(response.json()["errors"]["file"])
    # the converted slide still serves; a failed slide can be converted again, a busy one not
    ready.refresh_from_db()
    assert ready.state == SlideState.READY
    failed = Slide.objects.get(file_name="notes.svs")
    assert api("writer").post(f"/api/v1/slides/{failed.pk}/convert/", {}, format="json").status_code == 202
    busy = api("writer").post(f"/api/v1/slides/{failed.pk}/convert/", {}, format="json")
    assert busy.status_code == 409 and busy.json()["code"] == "busy"
    unknown = api("writer").post(
        f"/api/v1/slides/{ready.pk}/convert/", {"options": {"speed": 3}}, format="json"
    )
    assert unknown.status_code == 400 and "Unknown conversion settings: speed" in unknown.json()["detail"]
    wrong = api("writer").post(
        f"/api/v1/slides/{ready.pk}/convert/", {"options": {"max_white_fraction": 3}}, format="json"
    )
    assert wrong.status_code == 400 and "max_white_fraction" in wrong.json()["detail"]
    for options in ('{"min_island_tiles": Infinity}', '{"max_white_fraction": NaN}', "[1]", "{"):
        response = add(api, "writer", project, ready.source_full_path, options=options)
        assert response.status_code == 400, (options, response.content)


def test_annotations_round_trip_as_geojson(ready, api):
    features = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [900, 800]},
                "properties": {"label": "mitosis"},
            },
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[100, 100], [400, 100], [400, 300], [100, 300], [100, 100]]],
                },
                "properties": {"label": "tumour", "colour": "#ff0000"},
            },
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [[[10, 10], [50, 80], [90, 10], [10, 10]]]},
                "properties": {"classification": {"name": "necrosis"}},
            },
        ],
    }
    url = f"/api/v1/slides/{ready.pk}/annotations/"
    created = api("writer").post(url, features, format="json")
    assert created.status_code == 201, created.content
    exported = api("reader").get(url).json()
    assert exported["type"] == "FeatureCollection"
    got = [(f["geometry"], f["properties"]["label"], f["properties"]["kind"]) for f in exported["features"]]
    assert got == [
        ({"type": "Point", "coordinates": [900.0, 800.0]}, "mitosis", "point"),
        (features["features"][1]["geometry"], "tumour", "rectangle"),
        (features["features"][2]["geometry"], "necrosis", "polygon"),
    ]
    assert exported["features"][1]["properties"]["colour"] == "#ff0000"
    # importing the export again gives the same shapes
    again = api("writer").post(url, exported, format="json")
    assert again.status_code == 201 and len(api("reader").get(url).json()["features"]) == 6
    first = exported["features"][0]["id"]
    assert api("reader").delete(f"{url}{first}/").status_code == 403
    assert api("writer").delete(f"{url}{first}/").status_code == 204
    assert api("writer").delete(f"{url}{first}/").status_code == 404
    for bad in (
        {"type": "Feature"},
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 0]]]}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": ["a", 1]}},
        {"type": "FeatureCollection", "features": "none"},
        ["not", "an", "object"],
    ):
        response = api("writer").post(url, bad, format="json")
        assert response.status_code == 400, (bad, response.content)
        assert response.json()["detail"]
    assert api("reader").post(url, features, format="json").status_code == 403
    assert len(api("reader").get(url).json()["features"]) == 5


ROLES = ["anonymous", "stranger", "reader", "writer", "owner", "admin"]


def test_every_endpoint_for_every_role(ready, api, project, slide_files, people):
    base = f"/api/v1/slides/{ready.pk}"
    reads = [
        f"{base}/",
        f"{base}/deepzoom.dzi",
        f"{base}/deepzoom_files/12/3_3.jpeg",
        f"{base}/tiles/0/0/0",
        f"{base}/region?x=0&y=0&width=10&height=10",
        f"{base}/images/thumbnail",
        f"{base}/annotations/",
    ]
    expected_read = {
        "anonymous": 401,
        "stranger": 404,
        "reader": 200,
        "writer": 200,
        "owner": 200,
        "admin": 200,
    }
    for role in ROLES:
        for url in reads:
            status = api(role).get(url).status_code
            assert status in (expected_read[role], 403 if role == "anonymous" else -1), (role, url, status)
        listed = api(role).get("/api/v1/slides/")
        if role == "anonymous":
            assert listed.status_code in (401, 403)
        else:
            ids = [s["id"] for s in listed.json()["results"]]
            assert ids == ([] if role == "stranger" else [ready.pk]), role
    changes = {
        "anonymous": (401, 403),
        "stranger": (404,),
        "reader": (403,),
        "writer": (200,),
        "owner": (200,),
        "admin": (200,),
    }
    for role in ROLES:
        status = api(role).patch(f"{base}/", {"name": f"renamed by {role}"}, format="json").status_code
        assert status in changes[role], (role, status)
        status = api(role).post(f"{base}/convert/", {}, format="json").status_code
        assert status in (*changes[role], 202, 409) and (status in (202, 409)) == (changes[role] == (200,)), (
            role,
            status,
        )
        Slide.objects.filter(pk=ready.pk).update(state=SlideState.READY)
    # conversion settings change only through convert/ (which makes the pyramid again): an update
    # leaves them, also when a form sends null for them
    before = Slide.objects.get(pk=ready.pk).options
    for response in (
        api("writer").patch(f"{base}/", {"options": None}, format="json"),
        api("writer").patch(f"{base}/", {"options": {"max_white_fraction": 0.1}}, format="json"),
        api("writer").put(f"{base}/", {"name": "by form", "options": "null"}),
    ):
        assert response.status_code == 200 and response.json()["options"] == before, response.content
    assert Slide.objects.get(pk=ready.pk).options == before
    # adding needs the writer role in the project
    for role, status in {
        "anonymous": (401, 403),
        "stranger": (403,),
        "reader": (403,),
        "writer": (201,),
        "owner": (201,),
        "admin": (201,),
    }.items():
        response = add(api, role, project, slide_files["aperio"], name=f"by {role}")
        assert response.status_code in status, (role, response.status_code)
    # a project of their own does not open someone else's slides
    create_project(name="Other", description="", owner=people["stranger"])
    assert api("stranger").get(f"{base}/tiles/0/0/0").status_code == 404
    # deleting: writers and up
    for role, status in {"anonymous": (401, 403), "stranger": (404,), "reader": (403,)}.items():
        assert api(role).delete(f"{base}/").status_code in status, role
    assert api("writer").delete(f"{base}/").status_code == 204
    assert api("owner").get(f"{base}/deepzoom.dzi").status_code == 404


def test_a_slide_without_pyramid_says_so(api, project, slide_files, small_tiles):
    response = add(api, "writer", project, slide_files["generic"])
    slide_id = response.json()["id"]
    not_yet = api("reader").get(f"/api/v1/slides/{slide_id}/deepzoom_files/12/0_0.jpeg")
    assert not_yet.status_code == 409 and not_yet.json()["code"] == "not_ready"
    listed = api("reader").get(f"/api/v1/slides/?project={project.pk}&state=uploaded").json()["results"]
    assert [s["id"] for s in listed] == [slide_id]
    for bad in ("?state=done", "?project=x"):
        assert api("reader").get(f"/api/v1/slides/{bad}").status_code == 400


def test_a_slide_from_a_chunked_upload(api, project, slide_files, small_tiles):
    data = slide_files["aperio"].read_bytes()
    client = api("writer")
    chunk = 256 * 1024
    session = client.post(
        "/api/v1/uploads/",
        {"file_name": "case-7.svs", "size": len(data), "purpose": "slide", "chunk_size": chunk},
        format="json",
    ).json()
    for index in range(session["chunk_count"]):
        piece = data[index * chunk : (index + 1) * chunk]
        response = client.put(
            f"/api/v1/uploads/{session['id']}/chunks/{index}/",
            piece,
            content_type="application/octet-stream",
            HTTP_X_CONTENT_SHA256=slide_service.hashlib.sha256(piece).hexdigest(),
        )
        assert response.status_code == 200
    # not finished yet: refused, and nothing is spent
    early = client.post("/api/v1/slides/", {"project": project.pk, "upload": session["id"]}, format="json")
    assert early.status_code == 409 and "not finished" in early.json()["detail"]
    assert client.post(f"/api/v1/uploads/{session['id']}/finish/").json()["state"] == "complete"
    # someone else cannot take it; bad settings do not spend it
    other = api("owner").post(
        "/api/v1/slides/", {"project": project.pk, "upload": session["id"]}, format="json"
    )
    assert other.status_code == 404
    bad = client.post(
        "/api/v1/slides/",
        {"project": project.pk, "upload": session["id"], "options": {"x": 1}},
        format="json",
    )
    assert bad.status_code == 400
    both = client.post("/api/v1/slides/", {"project": project.pk}, format="json")
    assert both.status_code == 400 and "file" in both.json()["errors"]
    created = client.post("/api/v1/slides/", {"project": project.pk, "upload": session["id"]}, format="json")
    assert created.status_code == 201, created.content
    slide = Slide.objects.get(pk=created.json()["id"])
    assert slide.file_name == "case-7.svs" and slide.source_full_path.read_bytes() == data
    run_conversion(slide)
    assert slide.state == SlideState.READY and slide.pyramid.vendor == "aperio"
    assert slide.sha256 == slide_service.hashlib.sha256(data).hexdigest()
    again = client.post("/api/v1/slides/", {"project": project.pk, "upload": session["id"]}, format="json")
    assert again.status_code == 409


def test_slides_of_several_files_come_as_a_zip(api, project, slide_files, small_tiles, tmp_path):
    import zipfile

    bundle = tmp_path / "case-7.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("README.txt", "scanned 2026-01-02\n")
        archive.write(slide_files["aperio"], "case-7/case-7.svs")
    empty = tmp_path / "papers.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("notes.txt", "no slide here\n")
    sneaky = tmp_path / "sneaky.zip"
    with zipfile.ZipFile(sneaky, "w") as archive:
        archive.writestr("../../outside.svs", "x")
    outcomes = {}
    for path in (bundle, empty, sneaky):
        slide = Slide.objects.get(pk=add(api, "writer", project, path).json()["id"])
        run_conversion(slide)
        outcomes[path.name] = slide
    ready = outcomes["case-7.zip"]
    assert ready.state == SlideState.READY and ready.pyramid.vendor == "aperio"
    assert ready.pyramid.images == ["label", "macro", "thumbnail"]
    assert outcomes["papers.zip"].state == SlideState.FAILED
    assert "holds no slide the portal reads (found: notes.txt)" in outcomes["papers.zip"].message
    assert (
        outcomes["sneaky.zip"].state == SlideState.FAILED and "outside it" in outcomes["sneaky.zip"].message
    )
    assert not (tmp_path.parent / "outside.svs").exists()


def test_deleting_removes_the_files_and_a_pyramid_nobody_shows(ready, api, project, slide_files):
    second = Slide.objects.get(pk=add(api, "writer", project, slide_files["generic"]).json()["id"])
    run_conversion(second)
    pyramid_file = ready.pyramid.full_path
    assert second.pyramid_id == ready.pyramid_id
    assert api("writer").delete(f"/api/v1/slides/{ready.pk}/").status_code == 204
    assert not ready.source_full_path.exists() and pyramid_file.exists()  # the second slide shows it
    assert api("writer").delete(f"/api/v1/slides/{second.pk}/").status_code == 204
    assert not pyramid_file.exists() and not Pyramid.objects.exists()


def test_a_conversion_whose_worker_vanished_ends_as_failed(api, project, slide_files, small_tiles):
    from portal.models import Job

    slide = Slide.objects.get(pk=add(api, "writer", project, slide_files["generic"]).json()["id"])
    Slide.objects.filter(pk=slide.pk).update(state=SlideState.CONVERTING)
    busy = api("writer").post(f"/api/v1/slides/{slide.pk}/convert/", {}, format="json")
    assert busy.status_code == 409
    assert api("writer").delete(f"/api/v1/slides/{slide.pk}/").status_code == 409
    Job.objects.filter(target_id=slide.pk).update(
        state="failed", error="The worker running this job was lost."
    )
    again = api("writer").post(f"/api/v1/slides/{slide.pk}/convert/", {}, format="json")
    assert again.status_code == 202
    slide.refresh_from_db()
    assert slide.state == SlideState.UPLOADED
    run_conversion(slide)
    assert slide.state == SlideState.READY
