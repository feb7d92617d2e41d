"""The training job (`pathology.train`, on the `gpu` queue): a built-in network trained on a
project's slides with labels from their metadata, split by patient, registered as a model version
with its metrics and provenance.

Instead of a built-in network, a registered model of the project (`base_model`: an uploaded
TorchScript classifier or backbone, or one trained here) can be fine-tuned: a classifier of
exactly the training's classes (same labels, same order) is trained as it is; a backbone, or a
classifier of other classes, gets a new linear head (`networks.FineTuned`), and with
`freeze_backbone` only that head learns. Patch size, input size and normalisation are the base's
unless given (a different input size only if the base takes it); the provenance names the base.

`start` checks everything that can be checked before any work (architecture or base model,
sizes, slides converted with microns per pixel, a label for each slide, at least two classes and
three patients) and records the labels and patients it found in the job's parameters, so the job
and its provenance use exactly what was checked.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path

from django.conf import settings

from pathology.ai import ARCHITECTURES, AIError
from pathology.models import ModelKind, ModelVersion, Slide, SlideState

KIND = "pathology.train"


class TrainingError(AIError):
    """A training that cannot be started."""


def _number(params: dict, key: str, low, high, kind=float):
    try:
        value = kind(params[key])
    except (TypeError, ValueError):
        raise TrainingError(f"`{key}` must be a number.", f"invalid_{key}") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise TrainingError(f"`{key}` must be between {low} and {high}.", f"invalid_{key}")
    return value


# What a training request may leave out (`TrainingSerializer` shows these defaults).
DEFAULTS = {
    "architecture": "patchnet",
    "label": "diagnosis",
    "patch_microns": 128.0,
    "input_size": 64,
    "epochs": 10,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "samples_per_epoch": 1024,
    "validation": 0.15,
    "test": 0.15,
    "seed": 0,
    "freeze_backbone": False,
}
# What a base model gives when it is fine-tuned, unless the request says otherwise.
FROM_BASE = ("architecture", "patch_microns", "input_size")


def clean(params: dict) -> dict:
    """The request's values, checked, with the defaults; with a `base_model`, architecture, patch
    size and input size are None unless given (`start` takes them from the base)."""
    given = {k: v for k, v in params.items() if v is not None}
    base = given.get("base_model")
    if base is not None:
        if "architecture" in given:
            raise TrainingError(
                "Give either `architecture` (a built-in network trained from scratch) or `base_model` "
                "(a registered model to fine-tune), not both.",
                "architecture_and_base_model",
            )
        base = _number(given, "base_model", 1, 2**63 - 1, int)
    params = {**{k: v for k, v in DEFAULTS.items() if base is None or k not in FROM_BASE}, **given}
    name = str(params.get("name") or "").strip()
    if not name or len(name) > 100:
        raise TrainingError("Give the model a name (at most 100 characters).", "invalid_name")
    architecture = params.get("architecture")
    if base is None and architecture not in ARCHITECTURES:
        raise TrainingError(f"`architecture` is one of {', '.join(ARCHITECTURES)}.", "invalid_architecture")
    freeze = params["freeze_backbone"]
    if not isinstance(freeze, bool):
        raise TrainingError("`freeze_backbone` is true or false.", "invalid_freeze_backbone")
    if freeze and base is None:
        raise TrainingError(
            "`freeze_backbone` trains only a new head over a registered model: give its id as `base_model`.",
            "invalid_freeze_backbone",
        )
    return {
        "name": name,
        "architecture": architecture,
        "base_model": base,
        "freeze_backbone": freeze,
        "label": str(params["label"] or "diagnosis"),
        "patch_microns": _number(params, "patch_microns", 1, 10_000) if "patch_microns" in params else None,
        "input_size": _number(params, "input_size", 16, 1024, int) if "input_size" in params else None,
        "epochs": _number(params, "epochs", 1, 500, int),
        "batch_size": _number(params, "batch_size", 2, 1024, int),
        "learning_rate": _number(params, "learning_rate", 1e-6, 1),
        "samples_per_epoch": _number(params, "samples_per_epoch", 16, 10_000_000, int),
        "validation": _number(params, "validation", 0, 0.5),
        "test": _number(params, "test", 0, 0.5),
        "seed": _number(params, "seed", 0, 2**31 - 1, int),
        "stains": [str(s) for s in params.get("stains") or []],
    }


def start(project, user, params: dict, slide_ids: list[int] | None = None):
    """Check and queue a training; returns the job."""
    from pathology.services.facts import slide_facts
    from portal.services.jobs import start_job

    cleaned = clean(params)
    base = base_model(project, user, cleaned["base_model"]) if cleaned["base_model"] else None
    slides = Slide.objects.filter(project=project, state=SlideState.READY).select_related("pyramid")
    if slide_ids:
        slides = slides.filter(pk__in=slide_ids)
    slides = list(slides)
    facts = slide_facts(slides, keys=(cleaned["label"],), with_patient=True)
    chosen = []
    for slide in slides:
        label = facts.get(slide.pk, {}).get(cleaned["label"])
        if label in (None, ""):
            continue  # not linked, or no label: not used
        if not slide.pyramid.mpp_x:
            raise TrainingError(f"Slide {slide.pk} ({slide.name}) has no microns per pixel.", "mpp_needed")
        chosen.append({"slide": slide.pk, "label": str(label), "patient": facts[slide.pk]["patient"]})
    classes = sorted({item["label"] for item in chosen})
    patients = {item["patient"] for item in chosen}
    if len(classes) < 2:
        raise TrainingError(
            f"Training needs slides of at least two different values of “{cleaned['label']}” in their "
            f"metadata; found {len(classes)} among {len(chosen)} labelled slides.",
            "too_few_classes",
        )
    if len(patients) < 3:
        raise TrainingError(
            "Training needs slides of at least three patients (train, validation, test).", "too_few_patients"
        )
    if base is not None:
        cleaned.update(fine_tuning(base, cleaned, classes))
    cleaned.update({"project": project.pk, "classes": classes, "slides": chosen})
    return start_job(KIND, user=user, params=cleaned)


def base_model(project, user, pk: int) -> ModelVersion:
    """The model version to fine-tune: one `user` can see, in `project`, with its file."""
    found = ModelVersion.objects.for_user(user, "view").filter(pk=pk).first()
    if found is None:
        raise TrainingError(f"No model version {pk} among the models you can see.", "base_model_not_found")
    if found.project_id != project.pk:
        raise TrainingError(
            f"Model version {pk} ({found}) belongs to another project; a model is fine-tuned in its own "
            "project (register the file in this one to fine-tune it here).",
            "base_model_other_project",
        )
    if not found.full_path.is_file():
        raise TrainingError(f"The file of model version {pk} ({found}) is missing.", "base_model_missing")
    return found


def fine_tuning(base: ModelVersion, cleaned: dict, classes: list[str]) -> dict:
    """What the job needs to know of the base (recorded in its parameters), checked against the
    request: the patch size, input size and normalisation it trains with, and whether a new head
    maps the base's outputs to `classes`."""
    backbone = base.kind == ModelKind.BACKBONE
    outputs = base.features if backbone else len(base.classes)
    head = backbone or list(base.classes) != classes
    if cleaned["freeze_backbone"] and not head:
        raise TrainingError(
            f"`freeze_backbone` trains only a new head, but {base} already gives exactly these classes "
            f"({', '.join(classes)}) and is trained as it is: leave `freeze_backbone` out.",
            "invalid_freeze_backbone",
        )
    input_size = cleaned["input_size"] or base.input_size
    if input_size != base.input_size:
        from pathology.ai import registry

        try:  # a network with a fixed input size (a flattening layer) takes only its own
            registry.check_model(base.full_path, input_size, outputs, base.kind)
        except registry.ModelError as exc:
            raise TrainingError(
                f"{base} (registered for {base.input_size}-pixel input) cannot be trained with `input_size` "
                f"{input_size}: {exc} Leave `input_size` out to use the base's.",
                "input_size_mismatch",
            ) from None
    return {
        "patch_microns": cleaned["patch_microns"] or base.patch_microns,
        "input_size": input_size,
        "normalisation": base.normalisation,
        "stains": cleaned["stains"] or list(base.stains),
        "base": {
            "id": base.pk,
            "name": base.name,
            "version": base.version,
            "sha256": base.sha256,
            "kind": base.kind,
            "outputs": outputs,
            "new_head": head,
        },
    }


def load_base(base: dict):
    """The base model's TorchScript module, loaded afresh (trained in place, so never the
    registry's shared copy) after checking that its file is still the one registered."""
    import torch

    from pathology.ai.registry import sha256_of
    from portal.services.jobs import JobError

    version = ModelVersion.objects.filter(pk=base["id"]).first()
    if version is None or version.sha256 != base["sha256"]:
        raise JobError(
            f"The base model {base['name']} v{base['version']} is gone (its project was deleted?)."
        )
    try:
        found = sha256_of(version.full_path)
    except OSError as exc:
        raise JobError(f"The base model's file cannot be read: {exc}") from None
    if found != base["sha256"]:
        raise JobError(f"The file of the base model {version} has changed since it was registered.")
    return torch.jit.load(str(version.full_path), map_location="cpu")


def run(job, progress, **params) -> dict:
    import torch

    from pathology.ai import networks, patches, registry, training

    project_id = params["project"]
    classes = params["classes"]
    base = params.get("base")
    norm = params.get("normalisation")  # a base's; built-in networks take the default
    spec = patches.PatchSpec(
        params["patch_microns"],
        params["input_size"],
        *((tuple(norm["mean"]), tuple(norm["std"])) if norm else ()),
    )
    slides = {
        s.pk: s
        for s in Slide.objects.filter(pk__in=[i["slide"] for i in params["slides"]]).select_related("pyramid")
    }
    items = [i for i in params["slides"] if i["slide"] in slides]
    fractions = (1 - params["validation"] - params["test"], params["validation"], params["test"])
    train_p, val_p, test_p = training.split_by_patient(
        [i["patient"] for i in items], fractions, params["seed"]
    )

    def slide_items(patients_in):
        return [
            patches.SlideItem(
                str(Path(settings.PORTAL_DATA_DIR) / slides[i["slide"]].pyramid.path),
                slides[i["slide"]].pyramid.mpp_x,
                classes.index(i["label"]),
            )
            for i in items
            if i["patient"] in patients_in
        ]

    train_items, val_items, test_items = (
        slide_items(set(train_p)),
        slide_items(set(val_p)),
        slide_items(set(test_p)),
    )
    if len({i.label for i in train_items}) < 2:
        from portal.services.jobs import JobError

        raise JobError("The training patients do not cover two classes; add patients or change the seed.")
    progress(0.02, "Reading the slides' tissue")
    train_set = patches.SlidePatches(train_items, spec, params["samples_per_epoch"], seed=params["seed"])
    val_set = (
        patches.SlidePatches(
            val_items, spec, max(64, params["samples_per_epoch"] // 4), seed=params["seed"] + 1
        )
        if val_items
        else None
    )
    torch.manual_seed(params["seed"])  # a new network's (or head's) first weights
    if base:
        model = networks.fine_tuning(
            load_base(base), base["outputs"], len(classes), base["new_head"], params["freeze_backbone"]
        )
    else:
        model = networks.build(params["architecture"], len(classes))
    epochs = params["epochs"]

    def report(epoch: int, metrics: dict) -> None:
        text = f"Epoch {epoch} of {epochs}: loss {metrics['loss']:.3f}, accuracy {metrics['accuracy']:.1%}"
        if "val_accuracy" in metrics:
            text += f", validation {metrics['val_accuracy']:.1%}"
        progress(0.05 + 0.8 * epoch / epochs, text)
        progress.record(metrics)  # plotted live on the job's page

    checkpoint = Path(settings.PORTAL_DATA_DIR) / "training" / f"job-{job.pk}.ckpt"
    # A TorchScript base runs op by op while it trains: the JIT's own fused and differentiated graphs
    # do not know the mixed precision of eager autocast (torch documents the mix as unsupported).
    with torch.jit.optimized_execution(not base):
        result = training.train(
            model,
            train_set,
            val_set,
            epochs=epochs,
            batch_size=params["batch_size"],
            learning_rate=params["learning_rate"],
            workers=2,
            seed=params["seed"],
            checkpoint=checkpoint,
            progress=report,
        )
    progress(0.88, "Testing on the held-out patients")
    correct = total = 0
    for item in test_items:
        grid = patches.GridPatches(item.pyramid, item.mpp, spec)
        probabilities, tissue = training.predict_patches(model, grid, device=result.device)
        found = probabilities[tissue].argmax(axis=1)
        correct += int((found == item.label).sum())
        total += len(found)
    metrics = {
        "history": result.history,
        "train_accuracy": result.history[-1]["accuracy"],
        "validation_accuracy": result.history[-1].get("val_accuracy"),
        "test_accuracy": correct / total if total else None,
        "test_patches": total,
    }
    code = code_version()
    provenance = {
        "job": job.pk,
        "device": result.device,
        "mixed_precision": result.mixed_precision,
        "label": params["label"],  # the metadata property the classes come from
        "slides": items,
        "patients": {"train": train_p, "validation": val_p, "test": test_p},
        "parameters": {
            k: params[k] for k in ("epochs", "batch_size", "learning_rate", "samples_per_epoch", "seed")
        },
        "code_version": code,
        "torch": torch.__version__,
    }
    architecture = params["architecture"]
    description = f"Trained in the portal ({architecture}, {epochs} epochs)."
    if base:
        named = f"{base['name']} v{base['version']}"
        architecture = f"fine-tuned:{named}"[:100]
        how = "the same classes" if not base["new_head"] else "a new head"
        if params["freeze_backbone"]:
            how += ", the base frozen"
        description = f"Fine-tuned in the portal from {named} ({how}, {epochs} epochs)."
        provenance.update(
            {
                "fine_tuned": True,
                "base_model": {k: base[k] for k in ("id", "name", "version", "sha256", "kind")},
                "new_head": base["new_head"],
                "freeze_backbone": params["freeze_backbone"],
            }
        )
    from metadata.models import Project

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        networks.scripted(model.cpu()).save(str(path))
        version = registry.register(
            Project.objects.get(pk=project_id),
            job.created_by,
            path,
            {
                "name": params["name"],
                "classes": classes,
                "patch_microns": params["patch_microns"],
                "input_size": params["input_size"],
                "normalisation": {"mean": list(spec.mean), "std": list(spec.std)},
                "stains": params["stains"],
                "metrics": metrics,
                "provenance": provenance,
                "description": description,
            },
            architecture=architecture,
        )
    checkpoint.unlink(missing_ok=True)
    from portal.models import Job

    job.result_url = f"/models/{version.pk}/"  # the job page links to the model
    Job.objects.filter(pk=job.pk).update(result_url=job.result_url)
    return {
        "model_version": version.pk,
        "device": result.device,
        **{k: v for k, v in metrics.items() if k != "history"},
    }


def code_version() -> str:
    """The portal's git commit (and "-dirty" with local changes), or "unknown" outside a checkout."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        found = subprocess.run(  # noqa: S603 - git, with fixed arguments
            [git, "describe", "--always", "--dirty"],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return found.stdout.strip() or "unknown"


def versions_trained_by(job) -> ModelVersion | None:
    return ModelVersion.objects.filter(provenance__job=job.pk).first()
