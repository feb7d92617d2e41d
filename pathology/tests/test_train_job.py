"""The training job: labels from the patients' metadata, a split by patient, training on the
`gpu` queue (the CPU here), the result registered with its metrics and provenance; what cannot
be trained is refused before any work; every role."""

from __future__ import annotations

import pytest

from metadata.models import PropertyType
from metadata.services.entities import create_entities
from metadata.services.events import append_events
from pathology.ai import train_job
from pathology.models import ModelVersion, Pyramid, Slide, SlideState
from pathology.pyramid import SlidePyramid
from pathology.synthetic import Blob
from pathology.tests.test_pages import add_column
from pathology.tests.test_training import MPP, make_pyramid
from portal.models import Job
from portal.services.jobs import JOB_KINDS

pytestmark = pytest.mark.django_db(transaction=True)
PATIENTS = {"P1": "adeno", "P2": "adeno", "P3": "adeno", "P4": "squamous", "P5": "squamous", "P6": "squamous"}


@pytest.fixture
def labelled(project, people, settings, tmp_path):
    """Six patients, each with one slide of its diagnosis' texture, linked in the metadata."""
    settings.PORTAL_DATA_DIR = tmp_path / "data"
    add_column(project, "diagnosis", "patient", label="Diagnosis", type=PropertyType.TEXT, options=[])
    patient_kind, sample_kind = (
        project.entity_kinds.get(key="patient"),
        project.entity_kinds.get(key="sample"),
    )
    slides = []
    for number, (name, diagnosis) in enumerate(PATIENTS.items()):
        (patient,) = create_entities(patient_kind, 1, user=people["writer"])
        (sample,) = create_entities(sample_kind, 1, user=people["writer"], parent=patient)
        append_events(
            project,
            [{"entity": patient.pk, "property": "diagnosis", "value": diagnosis}],
            author=people["writer"],
        )
        texture = 0 if diagnosis == "adeno" else 1
        blobs = [Blob(500 + 50 * number, 500, 380, 330, texture), Blob(1150, 600, 260, 300, texture)]
        folder = tmp_path / "data" / "pyramids"
        folder.mkdir(parents=True, exist_ok=True)
        path = make_pyramid(folder, name, blobs, seed=number + 2)
        with SlidePyramid(path) as reader:
            pyramid = Pyramid.objects.create(
                sha256=f"{number:064d}",
                options_key="test",
                path=f"pyramids/{name}.pyramid",
                width=reader.width,
                height=reader.height,
                levels=reader.level_count,
                tile_size=reader.tile_size,
                mpp_x=MPP,
                mpp_y=MPP,
            )
        slides.append(
            Slide.objects.create(
                project=project,
                name=name,
                file_name=f"{name}.tif",
                state=SlideState.READY,
                pyramid=pyramid,
                sample=sample,
            )
        )
    return slides


PARAMS = {
    "name": "lung-textures",
    "patch_microns": 64,
    "input_size": 32,
    "epochs": 5,
    "samples_per_epoch": 512,
    "learning_rate": 3e-3,
    "validation": 0.2,
    "test": 0.35,
    "seed": 2,
}


def test_a_training_job_registers_a_model_that_tells_the_textures_apart(api, project, labelled):
    response = api("writer").post("/api/v1/models/train/", {"project": project.pk, **PARAMS}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.kind == "pathology.train" and JOB_KINDS[job.kind].queue == "gpu"
    assert job.params["classes"] == ["adeno", "squamous"] and len(job.params["slides"]) == 6
    JOB_KINDS[job.kind].task.apply(args=[job.pk])
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    version = ModelVersion.objects.get(pk=job.result["model_version"])
    assert (version.name, version.version, version.architecture) == ("lung-textures", 1, "patchnet")
    assert version.classes == ["adeno", "squamous"] and version.input_size == 32
    metrics, provenance = version.metrics, version.provenance
    assert metrics["test_accuracy"] >= 0.9 and metrics["test_patches"] > 20, metrics
    assert len(metrics["history"]) == 5 and "val_accuracy" in metrics["history"][0]
    split = provenance["patients"]
    assert (
        split["test"]
        and not set(split["train"]) & set(split["test"])
        and not set(split["train"]) & set(split["validation"])
    )
    assert provenance["job"] == job.pk and provenance["device"] == job.result["device"]
    assert provenance["parameters"]["epochs"] == 5 and provenance["code_version"]
    assert "Epoch 5 of 5" in job.message or job.progress == 1.0
    # every epoch's loss and accuracy kept on the job (plotted on its page), which links the model
    assert [p["epoch"] for p in job.metrics] == [1, 2, 3, 4, 5]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(job.metrics[-1])
    assert job.result_url == f"/models/{version.pk}/" and provenance["label"] == "diagnosis"

    # applied to every slide, the patients' diagnoses are right, and written back to the sheet
    started = api("writer").post(
        "/api/v1/inferences/",
        {"model_version": version.pk, "slides": [s.pk for s in labelled]},
        format="json",
    )
    assert started.status_code == 202, started.content
    for item in started.json():
        JOB_KINDS["pathology.infer"].task.apply(args=[item["job"]])
    report = api("reader").get(f"/api/v1/models/{version.pk}/evaluation/").json()
    assert report["compared"] == 6 and report["accuracy"] == 1.0, report
    assert report["confusion"] == [[3, 0], [0, 3]] and report["misclassified_slides"] == []
    assert report["per_class"]["adeno"] == {"precision": 1.0, "recall": 1.0, "patients": 3}
    row = report["patients"][0]
    assert row["vote"] == row["mean_probability"] == row["pathologist"] and row["by_stain"] == {
        "unknown": row["vote"]
    }
    exported = api("reader").get(f"/api/v1/models/{version.pk}/evaluation/?export=csv")
    assert exported["Content-Type"].startswith("text/csv") and exported.content.decode().count("\n") == 7
    missing = api("writer").post(f"/api/v1/models/{version.pk}/write-diagnoses/")
    assert missing.status_code == 400 and missing.json()["code"] == "no_column"
    add_column(project, "ai_diagnosis", "patient", label="AI diagnosis", type=PropertyType.TEXT, options=[])
    assert api("reader").post(f"/api/v1/models/{version.pk}/write-diagnoses/").status_code == 403
    written = api("writer").post(f"/api/v1/models/{version.pk}/write-diagnoses/")
    assert written.status_code == 200 and written.json() == {"patients": 6}
    from metadata.models import Event

    comments = list(
        Event.objects.filter(project=project, comment__startswith="AI diagnosis").values_list(
            "comment", flat=True
        )
    )
    assert len(comments) == 6 and all(
        f"model version {version.pk}) from inference jobs #" in c for c in comments
    )
    from pathology.services.facts import slide_facts

    facts = slide_facts(labelled, keys=("diagnosis", "ai_diagnosis"))
    assert all(f["ai_diagnosis"] == f["diagnosis"] for f in facts.values())


def test_what_cannot_be_trained_is_refused_before_any_work(api, project, labelled, people):
    Slide.objects.filter(name__in=["P4", "P5", "P6"]).update(sample=None)  # one class left
    one_class = api("writer").post("/api/v1/models/train/", {"project": project.pk, **PARAMS}, format="json")
    assert one_class.status_code == 400 and one_class.json()["code"] == "too_few_classes"
    bad = api("writer").post(
        "/api/v1/models/train/", {"project": project.pk, **PARAMS, "architecture": "vgg"}, format="json"
    )
    assert bad.status_code == 400
    assert not Job.objects.filter(kind="pathology.train").exists()
    assert (
        api("reader")
        .post("/api/v1/models/train/", {"project": project.pk, **PARAMS}, format="json")
        .status_code
        == 403
    )
    assert api("anonymous").post(
        "/api/v1/models/train/", {"project": project.pk, **PARAMS}, format="json"
    ).status_code in (401, 403)
    with pytest.raises(train_job.TrainingError, match="input_size"):
        train_job.clean({"name": "x", "input_size": 5})
