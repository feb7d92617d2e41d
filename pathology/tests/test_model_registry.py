"""The AI model registry: a TorchScript model uploaded through the API runs and gives what torch
gives loading the file itself; files and descriptions that disagree are refused with the reason
and nothing is registered; versions are numbered and never change; every role."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from torch import nn

from pathology.ai import networks, registry
from pathology.models import ModelVersion

pytestmark = pytest.mark.django_db

CLASSES = ["tumour", "stroma", "background"]


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.PORTAL_DATA_DIR = tmp_path / "data"
    registry._loaded.clear()


def torchscript(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(model.eval()), buffer)
    return buffer.getvalue()


class FixedInput(nn.Module):
    """A network that only takes 3 × 32 × 32 input (a flattening linear layer)."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.linear = nn.Linear(3 * 32 * 32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(x, 1))


def upload(api, role, project, content: bytes, **description):
    fields = {
        "project": project.pk,
        "name": "lung-he",
        "classes": json.dumps(CLASSES),
        "patch_microns": 128,
        "input_size": 32,
        "stains": json.dumps(["H&E"]),
        "normalisation": json.dumps({"mean": [0.7, 0.55, 0.7], "std": [0.15, 0.2, 0.15]}),
        "metrics": json.dumps({"accuracy": 0.93}),
        "provenance": json.dumps({"trained": "elsewhere", "code": "v1.2"}),
        "description": "Patch classifier fine-tuned on H&E",
        **description,
    }
    fields["file"] = SimpleUploadedFile("model.pt", content)
    return api(role).post("/api/v1/models/", fields, format="multipart")


def test_an_uploaded_model_gives_what_torch_gives(api, project):
    torch.manual_seed(3)
    content = torchscript(networks.build("patchnet", len(CLASSES)))
    response = upload(api, "writer", project, content)
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["name"], body["version"], body["architecture"]) == ("lung-he", 1, "torchscript")
    assert body["classes"] == CLASSES and body["stains"] == ["H&E"] and body["metrics"] == {"accuracy": 0.93}
    version = ModelVersion.objects.get(pk=body["id"])
    assert version.full_path.read_bytes() == content

    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    patches = registry.normalise(version, images)
    ours = registry.predict(version, patches, where="cpu")
    direct = torch.jit.load(io.BytesIO(content))
    direct.eval()
    with torch.no_grad():
        expected = torch.softmax(direct(torch.from_numpy(patches)), dim=1).numpy()
    assert ours.shape == (6, 3)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ours.sum(axis=1), 1, rtol=1e-5)
    assert registry.device() in ("cpu", "cuda")

    again = upload(api, "writer", project, content, description="same network, next version")
    assert again.status_code == 201 and again.json()["version"] == 2
    assert ModelVersion.objects.filter(project=project, name="lung-he").count() == 2
    with pytest.raises(ValueError, match="immutable"):
        version.description = "changed"
        version.save()


@pytest.mark.parametrize(
    ("content", "description", "code", "words"),
    [
        (b"", {}, None, "empty"),
        (b"PK\x03\x04 not really a model", {}, "not_torchscript", "Not a TorchScript model file"),
        ("fixed", {"input_size": 64}, "input_size_mismatch", "does not take 3 × 64 × 64 input"),
        (
            "patchnet2",
            {},
            "class_count_mismatch",
            "gives 2 scores per patch, its description names 3 classes",
        ),
        ("patchnet3", {"classes": json.dumps(["tumour"])}, "invalid_classes", "at least two"),
        ("patchnet3", {"input_size": 4}, "invalid_size", "between 16 and 1024"),
        ("patchnet3", {"patch_microns": "wide"}, None, "valid number"),
        (
            "patchnet3",
            {"normalisation": json.dumps({"mean": [0.5], "std": [0.5]})},
            "invalid_normalisation",
            "std",
        ),
        ("patchnet3", {"classes": "not json"}, None, "valid JSON"),
    ],
)
def test_bad_models_and_descriptions_are_refused(api, project, content, description, code, words):
    made = {
        "fixed": lambda: torchscript(FixedInput()),
        "patchnet2": lambda: torchscript(networks.build("patchnet", 2)),
        "patchnet3": lambda: torchscript(networks.build("patchnet", 3)),
    }
    data = made[content]() if isinstance(content, str) else content
    response = upload(api, "writer", project, data, **description)
    assert response.status_code == 400, response.content
    assert words in response.content.decode()
    if code:
        assert response.json()["code"] == code
    assert not ModelVersion.objects.exists()
    assert (
        not list((registry.settings.PORTAL_DATA_DIR / "models").glob("*/*"))
        if (registry.settings.PORTAL_DATA_DIR / "models").exists()
        else True
    )


def test_built_in_networks_are_scripted_and_registered(project, people, tmp_path):
    for architecture in networks.ARCHITECTURES:
        model = networks.build(architecture, 2)
        path = tmp_path / f"{architecture}.pt"
        networks.scripted(model).save(str(path))
        version = registry.register(
            project,
            people["writer"],
            path,
            {"name": architecture, "classes": ["a", "b"], "patch_microns": 100, "input_size": 64},
            architecture=architecture,
        )
        assert version.architecture == architecture and version.version == 1
        out = registry.predict(version, np.zeros((3, 3, 64, 64), dtype=np.float32), where="cpu")
        assert out.shape == (3, 2)
    with pytest.raises(ValueError, match="Unknown architecture"):
        networks.build("vgg", 2)


@pytest.mark.parametrize(
    ("role", "listed", "adds"),
    [
        ("anonymous", None, 403),
        ("stranger", 0, 403),
        ("reader", 1, 403),
        ("writer", 1, 201),
        ("owner", 1, 201),
        ("admin", 1, 201),
    ],
)
def test_every_role(api, project, people, tmp_path, role, listed, adds):
    path = tmp_path / "m.pt"
    networks.scripted(networks.build("patchnet", 3)).save(str(path))
    version = registry.register(
        project,
        people["owner"],
        path,
        {"name": "m", "classes": CLASSES, "patch_microns": 64, "input_size": 32},
    )
    listing = api(role).get("/api/v1/models/")
    detail = api(role).get(f"/api/v1/models/{version.pk}/")
    if listed is None:
        assert listing.status_code in (401, 403) and detail.status_code in (401, 403)
    else:
        assert listing.status_code == 200 and len(listing.json()["results"]) == listed
        assert detail.status_code == (200 if listed else 404)
    added = upload(api, role, project, path.read_bytes(), name="m")
    assert added.status_code == (adds if role != "anonymous" else added.status_code)
    if role == "anonymous":
        assert added.status_code in (401, 403)
    # versions never change through the API
    for method in ("put", "patch", "delete"):
        assert getattr(api(role), method)(f"/api/v1/models/{version.pk}/").status_code in (401, 403, 404, 405)
    assert ModelVersion.objects.get(pk=version.pk).description == ""


def test_pages_and_the_api_start_without_torch():
    """torch is imported where a model is used, not when the web process loads its URLs."""
    import subprocess
    import sys

    code = (
        "import django, sys; django.setup(); import portal.urls, pathology.api.views; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    env = {**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "portal.settings.test"}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0
