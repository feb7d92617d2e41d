"""Fine-tuning a registered TorchScript model: a backbone (a feature extractor in plain torch,
scripted) uploaded through the API is fine-tuned by the training job on synthetic slides of two
textures under a new head and registered as a classifier that tells them apart, with provenance
naming the base; a classifier of the same classes is trained as it is; a frozen base keeps its
weights; backbones classify nothing; what cannot be fine-tuned is refused before any work; every
role."""

from __future__ import annotations

import io
import json

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from torch import nn

from metadata.services.projects import create_project, set_member
from pathology.ai import networks, registry, train_job
from pathology.models import ModelVersion
from pathology.tests.test_train_job import PARAMS, labelled  # noqa: F401 - the fixture
from portal.models import Job
from portal.services.jobs import JOB_KINDS

pytestmark = pytest.mark.django_db(transaction=True)

NORMALISATION = {"mean": [0.6, 0.5, 0.6], "std": [0.25, 0.25, 0.25]}
# What the training job is asked besides the base (its input size and patch size are the base's).
TUNING = {k: v for k, v in PARAMS.items() if k not in ("patch_microns", "input_size")}
TUNING.update({"name": "lung-tuned", "epochs": 4})


class TinyBackbone(nn.Module):
    """A small feature extractor: N × 3 × S × S → N × 16 pooled features, for any S."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.features(x), 1)


class FixedBackbone(nn.Module):
    """A backbone that takes only 3 × 32 × 32 input (a flattening linear layer)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 32 * 32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(x, 1))


class PooledMaps(nn.Module):
    """Gives N × 8 × 1 × 1 (pooled but not flattened): not a backbone's N × features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


def torchscript(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(model.eval()), buffer)
    return buffer.getvalue()


def upload_backbone(api, role, project, content: bytes, **description):
    fields = {
        "project": project.pk,
        "name": "tiny-backbone",
        "kind": "backbone",
        "features": 16,
        "patch_microns": 64,
        "input_size": 32,
        "normalisation": json.dumps(NORMALISATION),
        "description": "Texture features, trained elsewhere",
        **description,
        "file": SimpleUploadedFile("backbone.pt", content),
    }
    return api(role).post("/api/v1/models/", fields, format="multipart")


def register(project, user, model: nn.Module, tmp_path, **description) -> ModelVersion:
    path = tmp_path / "model.pt"
    path.write_bytes(torchscript(model))
    fields = {"name": "base", "patch_microns": 64, "input_size": 32, "normalisation": NORMALISATION}
    return registry.register(project, user, path, {**fields, **description})


def train(api, role, project, **params):
    return api(role).post("/api/v1/models/train/", {"project": project.pk, **TUNING, **params}, format="json")


def run_job(response) -> Job:
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    JOB_KINDS[job.kind].task.apply(args=[job.pk])
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    return job


def weights(version: ModelVersion) -> dict[str, torch.Tensor]:
    return dict(torch.jit.load(str(version.full_path)).state_dict())


def test_an_uploaded_backbone_is_fine_tuned_into_a_classifier_of_the_textures(api, project, labelled):  # noqa: F811
    torch.manual_seed(0)
    uploaded = upload_backbone(api, "writer", project, torchscript(TinyBackbone()))
    assert uploaded.status_code == 201, uploaded.content
    body = uploaded.json()
    assert (body["kind"], body["features"], body["classes"], body["architecture"]) == (
        "backbone",
        16,
        [],
        "torchscript",
    )
    backbone = ModelVersion.objects.get(pk=body["id"])

    # a backbone classifies nothing: refused for inference and evaluation
    refused = api("writer").post(
        "/api/v1/inferences/", {"model_version": backbone.pk, "slides": [labelled[0].pk]}, format="json"
    )
    assert refused.status_code == 400 and refused.json()["code"] == "backbone_not_classifier"
    evaluation = api("reader").get(f"/api/v1/models/{backbone.pk}/evaluation/")
    assert evaluation.status_code == 400 and evaluation.json()["code"] == "backbone_not_classifier"
    with pytest.raises(registry.ModelError, match="backbone"):
        registry.load(backbone, "cpu")

    job = run_job(train(api, "writer", project, base_model=backbone.pk))
    assert job.params["input_size"] == 32 and job.params["patch_microns"] == 64
    assert job.params["normalisation"] == NORMALISATION and job.params["base"]["new_head"] is True
    version = ModelVersion.objects.get(pk=job.result["model_version"])
    assert (version.name, version.version, version.kind) == ("lung-tuned", 1, "classifier")
    assert version.architecture == "fine-tuned:tiny-backbone v1"
    assert version.classes == ["adeno", "squamous"] and version.features is None
    assert (version.input_size, version.patch_microns, version.normalisation) == (32, 64, NORMALISATION)
    provenance = version.provenance
    assert provenance["fine_tuned"] is True and provenance["new_head"] is True
    assert provenance["base_model"] == {
        "id": backbone.pk,
        "name": "tiny-backbone",
        "version": 1,
        "sha256": backbone.sha256,
        "kind": "backbone",
    }
    assert provenance["freeze_backbone"] is False and provenance["job"] == job.pk
    assert "tiny-backbone v1" in version.description
    assert version.metrics["test_accuracy"] >= 0.9 and version.metrics["test_patches"] > 20, version.metrics

    # the backbone learned: its weights in the result are not the base's (which stayed as registered)
    base, tuned = weights(backbone), weights(version)
    assert set(tuned) == {f"base.{k}" for k in base} | {"head.weight", "head.bias"}
    assert tuned["head.weight"].shape == (2, 16)
    assert not torch.equal(base["features.0.weight"], tuned["base.features.0.weight"])
    assert registry.sha256_of(backbone.full_path) == backbone.sha256  # the base's file is untouched

    # the result is a classifier like any other: applied to a slide of each class
    slides = [labelled[0], labelled[-1]]
    started = api("writer").post(
        "/api/v1/inferences/", {"model_version": version.pk, "slides": [s.pk for s in slides]}, format="json"
    )
    assert started.status_code == 202, started.content
    for item in started.json():
        JOB_KINDS["pathology.infer"].task.apply(args=[item["job"]])
    counts = {
        i["slide"]: api("reader").get(f"/api/v1/inferences/{i['id']}/").json()["class_counts"]
        for i in started.json()
    }
    adeno, squamous = counts[labelled[0].pk], counts[labelled[-1].pk]
    assert adeno["adeno"] > adeno["squamous"] and squamous["squamous"] > squamous["adeno"], counts


@pytest.mark.usefixtures("labelled")
def test_a_classifier_of_the_same_classes_is_trained_as_it_is(api, project, people, tmp_path):
    torch.manual_seed(1)
    classifier = register(
        project, people["owner"], networks.PatchNet(2, width=4), tmp_path, classes=["adeno", "squamous"]
    )
    job = run_job(
        train(
            api, "writer", project, base_model=classifier.pk, epochs=1, samples_per_epoch=32, stains=["H&E"]
        )
    )
    version = ModelVersion.objects.get(pk=job.result["model_version"])
    assert version.provenance["new_head"] is False and version.provenance["base_model"]["id"] == classifier.pk
    assert version.architecture == "fine-tuned:base v1" and version.stains == ["H&E"]
    base, tuned = weights(classifier), weights(version)
    assert set(base) == set(tuned) and not torch.equal(base["head.weight"], tuned["head.weight"])

    # other classes (here: in another order): a new head over the classifier's two scores; frozen,
    # the base's weights and batch-norm statistics stay as they were
    swapped = register(
        project, people["owner"], networks.PatchNet(2, width=4), tmp_path, classes=["squamous", "adeno"]
    )
    job = run_job(
        train(
            api,
            "writer",
            project,
            base_model=swapped.pk,
            freeze_backbone=True,
            name="frozen",
            epochs=1,
            samples_per_epoch=32,
        )
    )
    assert job.params["base"]["new_head"] is True and job.params["base"]["outputs"] == 2
    version = ModelVersion.objects.get(pk=job.result["model_version"])
    assert version.provenance["freeze_backbone"] is True and "frozen" in version.description
    base, tuned = weights(swapped), weights(version)
    assert all(torch.equal(value, tuned[f"base.{key}"]) for key, value in base.items())
    assert tuned["head.weight"].shape == (2, 2)
    refused = train(api, "writer", project, base_model=classifier.pk, freeze_backbone=True)
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_freeze_backbone"


def test_a_frozen_base_keeps_its_weights_and_statistics():
    torch.manual_seed(2)
    base = torch.jit.load(io.BytesIO(torchscript(TinyBackbone())))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = networks.fine_tuning(base, 16, 2, head=True, frozen=True)
    inputs, labels = torch.randn(16, 3, 32, 32), torch.tensor([0, 1] * 8)
    optimiser = torch.optim.AdamW(model.parameters(), lr=0.05)
    head = model.head.weight.detach().clone()
    model.train()
    for _ in range(3):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimiser.step()
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # batch norm too
    assert not torch.equal(head, model.head.weight)
    scripted = networks.scripted(model)  # registered like any model
    assert scripted(torch.zeros(2, 3, 32, 32)).shape == (2, 2)

    unfrozen = networks.fine_tuning(torch.jit.load(io.BytesIO(torchscript(TinyBackbone()))), 16, 2, head=True)
    assert all(p.requires_grad for p in unfrozen.parameters())


@pytest.mark.parametrize(
    ("model", "description", "code", "words"),
    [
        (TinyBackbone, {"features": ""}, "invalid_features", "needs `features`"),
        (TinyBackbone, {"features": 32}, "feature_count_mismatch", "gives 16 features per patch"),
        (TinyBackbone, {"classes": json.dumps(["a", "b"])}, "invalid_classes", "not classes"),
        (PooledMaps, {"features": 8}, "output_shape", "backbone gives one row of features"),
        (FixedBackbone, {"input_size": 48}, "input_size_mismatch", "3 × 48 × 48"),
        (TinyBackbone, {"kind": "detector"}, None, "valid choice"),
        (
            TinyBackbone,
            {"kind": "classifier", "classes": json.dumps(["a", "b"])},
            "invalid_features",
            "describes",
        ),
    ],
)
def test_bad_backbones_are_refused(api, project, settings, tmp_path, model, description, code, words):
    settings.PORTAL_DATA_DIR = tmp_path / "data"
    response = upload_backbone(api, "writer", project, torchscript(model()), **description)
    assert response.status_code == 400, response.content
    assert words in response.content.decode()
    if code:
        assert response.json()["code"] == code
    assert not ModelVersion.objects.exists()


@pytest.mark.usefixtures("labelled")
def test_what_cannot_be_fine_tuned_is_refused_before_any_work(api, project, people, template, tmp_path):
    backbone = register(project, people["owner"], TinyBackbone(), tmp_path, kind="backbone", features=16)
    fixed = register(project, people["owner"], FixedBackbone(), tmp_path, kind="backbone", features=16)
    # the writer reads another project's models; a third project's are not theirs to see
    other = create_project(name="Other", description="", owner=people["owner"], template=template)
    set_member(other, people["writer"], "reader", actor=people["owner"])
    elsewhere = register(other, people["owner"], TinyBackbone(), tmp_path, kind="backbone", features=16)
    hidden = create_project(name="Hidden", description="", owner=people["owner"], template=template)
    unseen = register(hidden, people["owner"], TinyBackbone(), tmp_path, kind="backbone", features=16)
    cases = [
        ({"base_model": 999_999}, "base_model_not_found", "No model version 999999"),
        ({"base_model": unseen.pk}, "base_model_not_found", "No model version"),
        ({"base_model": elsewhere.pk}, "base_model_other_project", "another project"),
        ({"base_model": backbone.pk, "architecture": "patchnet"}, "architecture_and_base_model", "not both"),
        ({"freeze_backbone": True}, "invalid_freeze_backbone", "`base_model`"),
        ({"base_model": fixed.pk, "input_size": 48}, "input_size_mismatch", "cannot be trained with"),
        ({"base_model": backbone.pk, "input_size": 8}, "invalid_input_size", "between 16 and 1024"),
        ({"base_model": "first"}, "invalid", "valid integer"),
        ({"base_model": backbone.pk, "freeze_backbone": "maybe"}, "invalid", "valid boolean"),
    ]
    for params, code, words in cases:
        response = train(api, "writer", project, **params)
        assert response.status_code == 400, (params, response.content)
        assert response.json()["code"] == code and words in response.content.decode(), (
            params,
            response.json(),
        )
    assert not Job.objects.filter(kind="pathology.train").exists()

    # a base whose file went missing
    backbone.full_path.rename(backbone.full_path.with_suffix(".gone"))
    missing = train(api, "writer", project, base_model=backbone.pk)
    assert missing.status_code == 400 and missing.json()["code"] == "base_model_missing"
    backbone.full_path.with_suffix(".gone").rename(backbone.full_path)

    # another input size the base takes is fine; the patch size may differ too
    started = train(api, "writer", project, base_model=backbone.pk, input_size=48, patch_microns=96)
    assert started.status_code == 202, started.content
    params = Job.objects.get(pk=started.json()["id"]).params
    assert (params["input_size"], params["patch_microns"], params["architecture"]) == (48, 96, None)
    with pytest.raises(train_job.TrainingError, match="not both"):
        train_job.clean({"name": "x", "base_model": 1, "architecture": "resnet18"})


@pytest.mark.parametrize(
    ("role", "status"), [("anonymous", None), ("stranger", 403), ("reader", 403), ("writer", 202)]
)
def test_every_role(api, project, people, settings, tmp_path, request, role, status):
    settings.PORTAL_DATA_DIR = tmp_path / "data"
    if status == 202:
        request.getfixturevalue("labelled")  # the slides to train on (the others are refused first)
    backbone = register(project, people["owner"], TinyBackbone(), tmp_path, kind="backbone", features=16)
    response = train(api, role, project, base_model=backbone.pk)
    if status is None:
        assert response.status_code in (401, 403)
    else:
        assert response.status_code == status, response.content
    assert Job.objects.filter(kind="pathology.train").count() == (1 if status == 202 else 0)
