"""The model registry: add a TorchScript model (uploaded, or trained here) as a new version after
checking that it loads and that it does what its description says; load versions for inference.

A model is checked before anything is stored: the file must be TorchScript; the network must
take N × 3 × S × S input for the described input size S and give N × C outputs for the C
described classes – or, for a backbone (a feature extractor, kept only to be fine-tuned),
N × F outputs for its F described features. Each failure says which, and nothing is registered.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import threading
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from pathology.ai import AIError
from pathology.models import ModelKind, ModelVersion

MAX_MODEL_BYTES = 2 * 1024**3
MIN_INPUT, MAX_INPUT = 16, 1024
MAX_FEATURES = 65_536


class ModelError(AIError):
    """A model file or description that cannot be registered."""


def device() -> str:
    """Where inference and training run: the GPU when torch sees one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def clean_description(description: dict) -> dict:
    """The description's fields, checked; ModelError naming the first that is wrong."""
    name = str(description.get("name") or "").strip()
    if not name or len(name) > 100:
        raise ModelError("Give the model a name (at most 100 characters).", "invalid_name")
    kind = description.get("kind") or ModelKind.CLASSIFIER
    if kind not in ModelKind.values:
        raise ModelError(
            "`kind` is classifier (class scores per patch) or backbone (features per patch).", "invalid_kind"
        )
    classes, features = description.get("classes"), description.get("features")
    if kind == ModelKind.BACKBONE:
        if classes:
            raise ModelError(
                "A backbone gives features, not classes: describe it by `features` and leave `classes` "
                "out (the classes come with fine-tuning).",
                "invalid_classes",
            )
        try:
            features = 0 if isinstance(features, bool | float) else int(features)
        except (TypeError, ValueError):
            features = 0
        if not 1 <= features <= MAX_FEATURES:
            raise ModelError(
                f"A backbone needs `features`: how many features it gives per patch (1 to {MAX_FEATURES:,}).",
                "invalid_features",
            )
        classes = []
    else:
        if features not in (None, ""):
            raise ModelError(
                "`features` describes a backbone; a classifier is described by its `classes` (or give "
                '`kind` "backbone").',
                "invalid_features",
            )
        features = None
        if (
            not isinstance(classes, list)
            or len(classes) < 2
            or not all(isinstance(c, str) and c.strip() for c in classes)
            or len({c.strip() for c in classes}) != len(classes)
        ):
            raise ModelError("`classes` must list at least two different class labels.", "invalid_classes")
    try:
        patch_microns = float(description.get("patch_microns"))
        input_size = int(description.get("input_size"))
    except (TypeError, ValueError):
        raise ModelError(
            "`patch_microns` (a number) and `input_size` (pixels) are needed.", "invalid_size"
        ) from None
    if not math.isfinite(patch_microns) or not 1 <= patch_microns <= 10_000:
        raise ModelError("`patch_microns` must be between 1 and 10,000 microns.", "invalid_size")
    if not MIN_INPUT <= input_size <= MAX_INPUT:
        raise ModelError(f"`input_size` must be between {MIN_INPUT} and {MAX_INPUT} pixels.", "invalid_size")
    normalisation = description.get("normalisation") or {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    mean, std = normalisation.get("mean") if isinstance(normalisation, dict) else None, None
    if isinstance(normalisation, dict):
        std = normalisation.get("std")
    if not (
        isinstance(mean, list)
        and isinstance(std, list)
        and len(mean) == len(std) == 3
        and all(isinstance(v, int | float) and math.isfinite(v) for v in mean + std)
        and all(v > 0 for v in std)
    ):
        raise ModelError(
            '`normalisation` is {"mean": [r, g, b], "std": [r, g, b]} (std > 0).', "invalid_normalisation"
        )
    stains = description.get("stains") or []
    if not isinstance(stains, list) or not all(isinstance(s, str) for s in stains):
        raise ModelError('`stains` is a list of stain names, e.g. ["H&E"].', "invalid_stains")
    for key in ("metrics", "provenance"):
        if not isinstance(description.get(key) or {}, dict):
            raise ModelError(f"`{key}` is an object.", f"invalid_{key}")
    return {
        "name": name,
        "kind": kind,
        "classes": [c.strip() for c in classes],
        "features": features,
        "patch_microns": patch_microns,
        "input_size": input_size,
        "normalisation": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "stains": [s.strip() for s in stains if s.strip()],
        "description": str(description.get("description") or ""),
        "metrics": description.get("metrics") or {},
        "provenance": description.get("provenance") or {},
    }


def check_model(path: Path, input_size: int, outputs: int, kind: str = ModelKind.CLASSIFIER):
    """Load the TorchScript file and try it on two blank inputs; the loaded module, or ModelError.
    A classifier must give `outputs` class scores per patch, a backbone `outputs` features."""
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch says "PytorchStreamReader failed …" etc.
        raise ModelError(
            f"Not a TorchScript model file ({str(exc).splitlines()[0][:200]}). Save it with "
            "torch.jit.script(model).save(path) or torch.jit.trace(…).save(path).",
            "not_torchscript",
        ) from None
    module.eval()
    try:
        with torch.no_grad():
            output = module(torch.zeros(2, 3, input_size, input_size))
    except Exception as exc:  # noqa: BLE001 - whatever the network raises on the wrong input
        first = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"The model does not take 3 × {input_size} × {input_size} input, the size its description "
            f"gives ({first}).",
            "input_size_mismatch",
        ) from None
    backbone = kind == ModelKind.BACKBONE
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[0] != 2:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        what = (
            "a backbone gives one row of features per patch (N × features; flatten pooled maps)"
            if backbone
            else "a patch classifier gives one row of class scores per patch (N × classes)"
        )
        raise ModelError(f"The model gives {shape} for 2 patches; {what}.", "output_shape")
    if backbone and output.shape[1] != outputs:
        raise ModelError(
            f"The backbone gives {output.shape[1]} features per patch, its description says {outputs}.",
            "feature_count_mismatch",
        )
    if not backbone and output.shape[1] != outputs:
        raise ModelError(
            f"The model gives {output.shape[1]} scores per patch, its description names {outputs} classes.",
            "class_count_mismatch",
        )
    return module


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def register(
    project, user, source: Path, description: dict, architecture: str = "torchscript"
) -> ModelVersion:
    """Check `source` (a TorchScript file) against `description` and add it as the next version
    of its name in `project`."""
    fields = clean_description(description)
    size = source.stat().st_size
    if size == 0:
        raise ModelError("The model file is empty (0 bytes).", "empty")
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"The model file is larger than {MAX_MODEL_BYTES // 1024**3} GiB.", "too_large")
    outputs = fields["features"] if fields["kind"] == ModelKind.BACKBONE else len(fields["classes"])
    check_model(source, fields["input_size"], outputs, fields["kind"])
    sha = sha256_of(source)
    relative = Path("models") / str(project.pk) / f"{sha}.pt"
    target = Path(settings.PORTAL_DATA_DIR) / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        shutil.copyfile(source, partial)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    for _ in range(3):  # two registering the same name at once: the second gets the next number
        try:
            with transaction.atomic():
                last = ModelVersion.objects.filter(project=project, name=fields["name"]).aggregate(
                    v=Max("version")
                )
                return ModelVersion.objects.create(
                    project=project,
                    version=(last["v"] or 0) + 1,
                    architecture=architecture,
                    path=str(relative),
                    sha256=sha,
                    size=size,
                    created_by=user,
                    **fields,
                )
        except IntegrityError:
            continue
    raise ModelError(
        "Another version of this model was being registered at the same moment; try again.", "busy"
    )


def require_classifier(version: ModelVersion) -> None:
    """ModelError for a backbone: it gives features, not classes, so it classifies nothing."""
    if version.kind == ModelKind.BACKBONE:
        raise ModelError(
            f"Model version {version.pk} ({version}) is a backbone: it gives features, not classes, so it "
            "cannot be applied to slides. Fine-tune it into a classifier first (POST /api/v1/models/train/ "
            "with it as `base_model`).",
            "backbone_not_classifier",
        )


_loaded: dict[tuple[int, str], object] = {}
_lock = threading.Lock()


def load(version: ModelVersion, where: str | None = None):
    """The version's network, in evaluation mode on `where` (default: `device()`); kept loaded
    (shared: never train a loaded module – fine-tuning loads its own copy)."""
    import torch

    require_classifier(version)
    where = where or device()
    key = (version.pk, where)
    with _lock:
        if key not in _loaded:
            module = torch.jit.load(str(version.full_path), map_location=where)
            module.eval()
            _loaded[key] = module
        return _loaded[key]


def predict(version: ModelVersion, patches, where: str | None = None):
    """Class probabilities (N × classes, numpy) for `patches`: N × 3 × S × S floats already scaled
    to 0–1 and normalised as the version says (see `normalise`)."""
    import torch

    module = load(version, where)
    device_name = where or device()
    with torch.no_grad():
        batch = torch.as_tensor(patches, dtype=torch.float32).to(device_name)
        return torch.softmax(module(batch), dim=1).cpu().numpy()


def normalise(version: ModelVersion, images):
    """N × S × S × 3 uint8 RGB patches → N × 3 × S × S floats as the version's network takes them."""
    from pathology.ai.patches import PatchSpec, to_input

    return to_input(images, PatchSpec.of(version))
