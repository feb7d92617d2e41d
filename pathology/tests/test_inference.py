"""Applying a registered model to slides: one job per slide on the `gpu` queue (the CPU here),
every tissue patch's probabilities stored and served, the device recorded; a slide without
microns per pixel asks for them; failures leave no results marked done; every role."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile

from pathology.ai import networks, patches, registry
from pathology.models import Inference, Pyramid, Slide
from pathology.tests.conftest import run_conversion
from portal.models import Job
from portal.services.jobs import JOB_KINDS

pytestmark = pytest.mark.django_db(transaction=True)
CLASSES = ["tumour", "stroma", "other"]


@pytest.fixture
def slide(api, project, slide_files, small_tiles, settings, tmp_path):
    settings.PORTAL_DATA_DIR = tmp_path / "data"
    with open(slide_files["generic"], "rb") as handle:
        upload = SimpleUploadedFile("tissue.tif", handle.read())
    response = api("writer").post(
        "/api/v1/slides/", {"project": project.pk, "file": upload}, format="multipart"
    )
    assert response.status_code == 201, response.content
    found = Slide.objects.get(pk=response.json()["id"])
    assert run_conversion(found).state == "succeeded"
    found.refresh_from_db()
    return found


@pytest.fixture
def version(project, people, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    networks.scripted(networks.build("patchnet", 3)).save(str(path))
    registry._loaded.clear()
    return registry.register(
        project,
        people["writer"],
        path,
        {"name": "lung", "classes": CLASSES, "patch_microns": 64, "input_size": 32},
    )


def run(job_id: int) -> Job:
    JOB_KINDS["pathology.infer"].task.apply(args=[job_id])
    return Job.objects.get(pk=job_id)


def test_a_model_classifies_every_tissue_patch(api, slide, version):
    response = api("writer").post(
        "/api/v1/inferences/", {"model_version": version.pk, "slides": [slide.pk]}, format="json"
    )
    assert response.status_code == 202, response.content
    (body,) = response.json()
    assert body["state"] == "queued" and body["mpp"] == pytest.approx(0.25)
    job = Job.objects.get(pk=body["job"])
    assert job.kind == "pathology.infer"
    assert JOB_KINDS[job.kind].queue == "gpu"
    job = run(job.pk)
    assert job.state == "succeeded", job.error
    record = Inference.objects.get(pk=body["id"])
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert job.result["device"] == record.device == expected_device
    assert record.state == "done" and record.tissue_patches > 10 and record.patches >= record.tissue_patches
    assert sum(record.class_counts.values()) == record.tissue_patches
    assert set(record.mean_probabilities) == set(CLASSES)

    found = api("reader").get(f"/api/v1/inferences/{record.pk}/results/").json()
    assert found["classes"] == CLASSES and len(found["centres"]) == record.patches
    # what the job stored is what the network gives for those patches
    grid = patches.GridPatches(str(slide.pyramid.full_path), 0.25, patches.PatchSpec.of(version))
    images = np.stack([grid[i][0].numpy() for i in range(5)])
    direct = torch.jit.load(str(version.full_path))
    direct.eval()
    with torch.no_grad():
        expected = torch.softmax(direct(torch.from_numpy(images)), dim=1).numpy()
    np.testing.assert_allclose(np.asarray(found["probabilities"][:5]), expected, atol=2e-3)
    listed = api("reader").get(f"/api/v1/inferences/?slide={slide.pk}").json()["results"]
    assert [item["id"] for item in listed] == [record.pk]


def test_a_slide_without_microns_per_pixel_asks_for_them(api, slide, version):
    Pyramid.objects.filter(pk=slide.pyramid_id).update(mpp_x=None, mpp_y=None)
    payload = {"model_version": version.pk, "slides": [slide.pk]}
    refused = api("writer").post("/api/v1/inferences/", payload, format="json")
    assert refused.status_code == 400 and refused.json()["code"] == "mpp_needed"
    assert "give its value as `mpp`" in refused.json()["detail"]
    assert not Inference.objects.exists()
    bad = api("writer").post("/api/v1/inferences/", {**payload, "mpp": -1}, format="json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_mpp"
    given = api("writer").post("/api/v1/inferences/", {**payload, "mpp": 0.25}, format="json")
    assert given.status_code == 202
    assert run(given.json()[0]["job"]).state == "succeeded"


def test_a_model_file_damaged_after_registration_fails_without_results(api, slide, version):
    version.full_path.write_bytes(b"damaged")
    registry._loaded.clear()
    started = api("writer").post(
        "/api/v1/inferences/", {"model_version": version.pk, "slides": [slide.pk]}, format="json"
    )
    job = run(started.json()[0]["job"])
    assert job.state == "failed" and job.error
    record = Inference.objects.get()
    assert record.state == "failed" and record.message and not record.path
    assert api("reader").get(f"/api/v1/inferences/{record.pk}/results/").status_code == 404


def test_unconverted_slides_and_other_projects(api, slide, version, people):
    from metadata.services.projects import create_project

    Slide.objects.filter(pk=slide.pk).update(state="converting")
    refused = api("writer").post(
        "/api/v1/inferences/", {"model_version": version.pk, "slides": [slide.pk]}, format="json"
    )
    assert refused.status_code == 400 and refused.json()["code"] == "not_ready"
    other = create_project(name="Other", description="", owner=people["writer"])
    Slide.objects.filter(pk=slide.pk).update(state="ready", project=other)
    elsewhere = api("writer").post(
        "/api/v1/inferences/", {"model_version": version.pk, "slides": [slide.pk]}, format="json"
    )
    assert elsewhere.status_code == 400 and elsewhere.json()["code"] == "other_project"


@pytest.mark.parametrize(
    ("role", "status"),
    [
        ("anonymous", (401, 403)),
        ("stranger", (400,)),
        ("reader", (403,)),
        ("writer", (202,)),
        ("owner", (202,)),
        ("admin", (202,)),
    ],
)
def test_every_role(api, slide, version, role, status):
    response = api(role).post(
        "/api/v1/inferences/", {"model_version": version.pk, "slides": [slide.pk]}, format="json"
    )
    assert response.status_code in status, response.content
    listing = api(role).get("/api/v1/inferences/")
    if role == "anonymous":
        assert listing.status_code in (401, 403)
    else:
        assert listing.status_code == 200


def test_the_diagnosis_map_is_served_as_tiles(api, slide, version):
    started = api("writer").post(
        "/api/v1/inferences/", {"model_version": version.pk, "slides": [slide.pk]}, format="json"
    )
    record_id = started.json()[0]["id"]
    waiting = api("reader").get(f"/api/v1/inferences/{record_id}/tiles/0/0/0")
    assert waiting.status_code == 404  # not run yet: no map
    assert run(started.json()[0]["job"]).state == "succeeded"
    found = api("reader").get(f"/api/v1/inferences/{record_id}/results/").json()
    assert found["tiles"] == f"/api/v1/inferences/{record_id}/tiles/{{level}}/{{x}}/{{y}}"
    pyramid = slide.pyramid
    top = pyramid.levels - 1
    # the tile under the first tissue patch, at full resolution, shows its class colour
    index = found["tissue"].index(True)
    cx, cy = found["centres"][index]
    tx, ty = int(cx // pyramid.tile_size), int(cy // pyramid.tile_size)
    response = api("reader").get(f"/api/v1/inferences/{record_id}/tiles/{top}/{tx}/{ty}")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert "private" in response["Cache-Control"]
    from io import BytesIO

    from PIL import Image

    pixels = np.asarray(Image.open(BytesIO(response.content)).convert("RGBA"))
    px, py = int(cx - tx * pyramid.tile_size), int(cy - ty * pyramid.tile_size)
    best = int(np.argmax(found["probabilities"][index]))
    colour = found["colours"][CLASSES[best]]
    assert tuple(pixels[py, px, :3]) == tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    # a whole-slide tile at the coarsest level, and nothing outside the slide
    assert api("reader").get(f"/api/v1/inferences/{record_id}/tiles/0/0/0").status_code == 200
    assert api("reader").get(f"/api/v1/inferences/{record_id}/tiles/{top}/999/0").status_code == 404
    assert api("reader").get(f"/api/v1/inferences/{record_id}/tiles/{top + 1}/0/0").status_code == 404
    assert api("stranger").get(f"/api/v1/inferences/{record_id}/tiles/0/0/0").status_code == 404
    assert api("anonymous").get(f"/api/v1/inferences/{record_id}/tiles/0/0/0").status_code in (401, 403)


def test_every_slide_of_the_project_at_once(api, slide, version):
    body = {"model_version": version.pk, "all_slides": True}
    assert api("reader").post("/api/v1/inferences/", body, format="json").status_code == 403
    both = api("writer").post("/api/v1/inferences/", {**body, "slides": [slide.pk]}, format="json")
    assert both.status_code == 400 and "either" in both.json()["detail"].lower()
    neither = api("writer").post("/api/v1/inferences/", {"model_version": version.pk}, format="json")
    assert neither.status_code == 400
    started = api("writer").post("/api/v1/inferences/", body, format="json")
    assert started.status_code == 202, started.content
    assert [i["slide"] for i in started.json()] == [slide.pk]
    assert started.json()[0]["model_label"] == "lung v1" and started.json()[0]["classes"] == CLASSES
