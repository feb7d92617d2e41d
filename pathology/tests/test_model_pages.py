"""The AI model pages: the list (with the forms to train and upload for writers), a version's page
with its inferences, the evaluation (accuracy, confusion matrix, per-class bars, patient table)
and the gallery of misclassified slides; the slide page's map panel; every role."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathology.ai import networks, registry
from pathology.models import Inference, InferenceState
from pathology.tests.test_train_job import PATIENTS, labelled  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def classified(project, people, labelled, settings, tmp_path):  # noqa: F811 - the fixture above
    """A registered version and a finished inference per slide whose patches vote for the slide's
    diagnosis, except P1's, which the model gets wrong."""
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    networks.scripted(networks.build("patchnet", 2)).save(str(path))
    version = registry.register(
        project,
        people["writer"],
        path,
        {"name": "lung-textures", "classes": ["adeno", "squamous"], "patch_microns": 64, "input_size": 32},
    )
    folder = tmp_path / "data" / "inference"
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for slide, diagnosis in zip(labelled, PATIENTS.values(), strict=True):
        right = 0 if diagnosis == "adeno" else 1
        winner = 1 - right if slide.name == "P1" else right
        probabilities = np.full((20, 2), 0.1, dtype=np.float16)
        probabilities[:, winner] = 0.9
        inference = Inference.objects.create(
            slide=slide, model_version=version, mpp=slide.pyramid.mpp_x, created_by=people["writer"]
        )
        np.savez_compressed(
            folder / f"{inference.pk}.npz",
            centres=np.array([[128 * i + 64, 64] for i in range(20)], dtype=np.float32),
            side=np.float32(128),
            probabilities=probabilities,
            tissue=np.ones(20, dtype=bool),
        )
        Inference.objects.filter(pk=inference.pk).update(
            state=InferenceState.DONE,
            path=f"inference/{inference.pk}.npz",
            patches=20,
            tissue_patches=20,
            class_counts={version.classes[winner]: 20},
            device="cpu",
        )
        made.append(inference)
    return version, made


def test_the_list_shows_the_projects_models_and_the_forms_to_writers(web, classified, project):
    version, _ = classified
    page = web("writer").get("/models/")
    assert page.status_code == 200
    text = page.content.decode()
    assert f'href="/models/{version.pk}/"' in text and "lung-textures" in text and "adeno, squamous" in text
    assert 'id="train-form"' in text and 'id="upload-form"' in text
    assert 'value="patchnet"' in text and 'value="resnet18"' in text
    reader = web("reader").get("/models/").content.decode()
    assert "lung-textures" in reader and 'id="train-form"' not in reader and 'id="upload-form"' not in reader
    stranger = web("stranger").get("/models/").content.decode()
    assert "lung-textures" not in stranger and "No models yet" in stranger
    assert web("stranger").get(f"/models/?project={project.pk}").status_code == 200


def test_a_versions_page_shows_the_evaluation_and_where_it_fails(web, classified, labelled):  # noqa: F811
    version, inferences = classified
    page = web("reader").get(f"/models/{version.pk}/")
    assert page.status_code == 200
    text = page.content.decode()
    context = page.context
    # five of six patients agree with the pathologist
    assert context["accuracy"] == 83.3 and 'id="accuracy">83.3 %' in text
    cells = [[c["count"] for c in row["cells"]] for row in context["matrix"]]
    assert cells == [[2, 1], [0, 3]]
    bars = {b["name"]: b for b in context["bars"]}
    assert bars["adeno"]["precision"] == 100.0 and bars["adeno"]["recall"] == 66.7
    assert bars["squamous"]["precision"] == 75.0 and bars["squamous"]["recall"] == 100.0
    assert bars["adeno"]["recall_width"] == pytest.approx(1.8 * 66.7, abs=0.1)
    assert 'id="confusion"' in text and 'id="class-bars"' in text and 'id="patient-table"' in text
    assert "export=csv" in text
    # the gallery: the misclassified patient's slide, its map over it, linked to the viewer
    (wrong,) = [i for i in inferences if i.slide.name == "P1"]
    assert [g["slide"].name for g in context["gallery"]] == ["P1"]
    assert f'href="/slides/{wrong.slide_id}/?inference={wrong.pk}"' in text
    assert f'src="/api/v1/inferences/{wrong.pk}/tiles/0/0/0"' in text
    # every slide's inference is listed; readers get no forms
    assert text.count('data-inference="') == len(labelled)
    assert 'id="apply-form"' not in text and 'id="write-diagnoses"' not in text
    # another label property to compare with: nothing to compare
    other = web("reader").get(f"/models/{version.pk}/?label=stage").context
    assert other["report"]["compared"] == 0 and other["accuracy"] is None


def test_writers_get_the_forms_and_strangers_nothing(web, classified, labelled):  # noqa: F811
    version, _ = classified
    text = web("writer").get(f"/models/{version.pk}/").content.decode()
    assert 'id="apply-form"' in text and 'id="write-diagnoses"' in text
    assert text.count('name="slides"') == len(labelled)
    owner = web("owner").get(f"/models/{version.pk}/")
    assert owner.status_code == 200 and 'id="apply-form"' in owner.content.decode()
    assert web("stranger").get(f"/models/{version.pk}/").status_code == 404
    assert web("admin").get(f"/models/{version.pk}/").status_code == 200  # portal admins see all
    assert web("reader").get("/models/999999/").status_code == 404
    anonymous = web("anonymous").get(f"/models/{version.pk}/")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


def test_the_slide_page_has_the_map_panel(web, classified, labelled):  # noqa: F811
    version, inferences = classified
    slide = labelled[0]
    writer = web("writer").get(f"/slides/{slide.pk}/?inference={inferences[0].pk}")
    text = writer.content.decode()
    assert 'id="ai-card"' in text and 'id="ai-opacity"' in text and "pathology/overlay.js" in text
    assert 'id="ai-apply-form"' in text and f'value="{version.pk}"' in text
    assert writer.context["config"]["inference"] == inferences[0].pk
    assert writer.context["config"]["levels"] == slide.pyramid.levels
    reader = web("reader").get(f"/slides/{slide.pk}/").content.decode()
    assert 'id="ai-card"' in reader and 'id="ai-apply-form"' not in reader


def test_a_backbone_offers_fine_tuning_not_classification(web, project, people, labelled, tmp_path):  # noqa: F811
    from pathology.tests.test_finetune import TinyBackbone

    path = tmp_path / "backbone.pt"
    torch.jit.script(TinyBackbone().eval()).save(str(path))
    backbone = registry.register(
        project,
        people["writer"],
        path,
        {"name": "tiny", "kind": "backbone", "features": 16, "patch_microns": 64, "input_size": 32},
    )
    text = web("writer").get(f"/models/{backbone.pk}/").content.decode()
    assert "gives 16 features per patch" in text and "Fine-tune it" in text
    assert 'id="apply-form"' not in text and 'id="evaluation"' not in text
    listing = web("writer").get("/models/").content.decode()
    assert "backbone: 16 features" in listing and 'data-kind="backbone"' in listing
    slide_page = web("writer").get(f"/slides/{labelled[0].pk}/")
    assert slide_page.context["model_versions"] == []  # nothing to classify with
