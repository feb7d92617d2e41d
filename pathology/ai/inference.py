"""Applying a model version to slides (the `pathology.infer` job, on the `gpu` queue).

`start` checks what can be checked at once (the slide is converted, microns per pixel are known
or given) and queues one job per slide; the job cuts the slide's tissue grid into patches of the
model's physical size, runs the network in batches (GPU when there is one, else the CPU; the
device is recorded on the job and the result) and stores every patch's class probabilities in a
compact file: `<data>/inference/<id>.npz` with `centres` (level-0 pixels, float32), `side`,
`probabilities` (float16, patches × classes) and `tissue` (bool). Only a finished inference is
marked done; a failure leaves a message and no result.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from pathology.ai import AIError
from pathology.models import Inference, InferenceState, ModelVersion, Slide, SlideState

KIND = "pathology.infer"


class InferenceError(AIError):
    """Slides or values a model cannot be applied to."""


def start(version: ModelVersion, slides: list[Slide], user, mpp: float | None = None) -> list[Inference]:
    """Queue the version on each slide (all or none: each slide is checked first)."""
    from portal.services.jobs import start_job

    if mpp is not None and (not math.isfinite(mpp) or not 0.01 <= mpp <= 100):
        raise InferenceError("`mpp` must be between 0.01 and 100 microns per pixel.", "invalid_mpp")
    chosen = []
    for slide in slides:
        if slide.project_id != version.project_id:
            raise InferenceError(
                f"Slide {slide.pk} is in another project than the model; a model is used in its own project.",
                "other_project",
            )
        if slide.state != SlideState.READY or slide.pyramid is None:
            raise InferenceError(f"Slide {slide.pk} is not converted yet ({slide.state}).", "not_ready")
        found = mpp if mpp is not None else slide.pyramid.mpp_x
        if not found:
            raise InferenceError(
                f"Slide {slide.pk} ({slide.name}) has no microns per pixel: give its value as `mpp` "
                f"to cut {version.patch_microns:g} µm patches.",
                "mpp_needed",
            )
        chosen.append((slide, found))
    made = []
    with transaction.atomic():
        for slide, found in chosen:
            inference = Inference.objects.create(
                slide=slide, model_version=version, mpp=found, created_by=user
            )
            job = start_job(KIND, user=user, target=inference, params={"inference": inference.pk})
            Inference.objects.filter(pk=inference.pk).update(job=job)
            inference.job = job
            made.append(inference)
    return made


def run(job, progress, inference: int) -> dict:
    """The job: the tissue grid's probabilities, stored; the summary on the inference."""
    import numpy as np

    from pathology.ai import registry
    from pathology.ai.patches import GridPatches, PatchError, PatchSpec
    from pathology.ai.training import predict_patches
    from portal.services.jobs import JobError

    record = Inference.objects.select_related("slide__pyramid", "model_version").get(pk=inference)
    version = record.model_version
    where = registry.device()
    Inference.objects.filter(pk=record.pk).update(state=InferenceState.RUNNING, device=where, message="")
    try:
        pyramid = Path(settings.PORTAL_DATA_DIR) / record.slide.pyramid.path
        progress(0.05, "Finding the tissue grid")
        grid = GridPatches(str(pyramid), record.mpp, PatchSpec.of(version))
        if len(grid) == 0:
            raise PatchError("The slide has no tissue tiles to classify.")
        progress(0.1, f"Classifying {len(grid):,} patches on {where}")
        module = registry.load(version, where)
        probabilities, tissue = predict_patches(
            module,
            grid,
            batch_size=64,
            workers=min(4, os.cpu_count() or 1) if len(grid) > 256 else 0,
            device=where,
        )
    except (PatchError, OSError, RuntimeError) as exc:
        Inference.objects.filter(pk=record.pk).update(
            state=InferenceState.FAILED, message=str(exc)[:500], finished_at=timezone.now()
        )
        raise JobError(str(exc)) from None
    relative = Path("inference") / f"{record.pk}.npz"
    target = Path(settings.PORTAL_DATA_DIR) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial.npz")
    np.savez_compressed(
        partial,
        centres=np.asarray(grid.centres, dtype=np.float32).reshape(-1, 2),
        side=np.float32(grid.side),
        probabilities=probabilities.astype(np.float16),
        tissue=tissue,
    )
    os.replace(partial, target)
    classes = version.classes
    winners = probabilities[tissue].argmax(axis=1) if tissue.any() else np.zeros(0, dtype=int)
    counts = {label: int((winners == i).sum()) for i, label in enumerate(classes)}
    means = (
        {label: float(probabilities[tissue][:, i].mean()) for i, label in enumerate(classes)}
        if tissue.any()
        else {}
    )
    Inference.objects.filter(pk=record.pk).update(
        state=InferenceState.DONE,
        path=str(relative),
        patches=len(grid),
        tissue_patches=int(tissue.sum()),
        class_counts=counts,
        mean_probabilities=means,
        message=f"{int(tissue.sum()):,} tissue patches classified on {where}",
        finished_at=timezone.now(),
    )
    return {
        "inference": record.pk,
        "device": where,
        "patches": len(grid),
        "tissue_patches": int(tissue.sum()),
    }


def results(inference: Inference) -> dict:
    """The stored per-patch results as arrays (for maps, votes and the API)."""
    import numpy as np

    with np.load(Path(settings.PORTAL_DATA_DIR) / inference.path) as data:
        return {key: data[key] for key in data.files}


# Okabe–Ito colours (told apart with every common colour-vision deficiency), one per class.
PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#0072B2", "#D55E00", "#F0E442", "#000000"]


def colours(classes: list[str]) -> dict[str, str]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(classes)}


def overlay_tile(inference: Inference, level: int, x: int, y: int) -> bytes | None:
    """A PNG tile of the diagnosis map at the slide pyramid's `level` and grid position: every
    tissue patch in the colour of its most likely class, opaque as the model is sure (a patch
    at chance is clear); None outside the slide."""
    import io

    import numpy as np
    from PIL import Image

    pyramid = inference.slide.pyramid
    levels, size = pyramid.levels, pyramid.tile_size
    if not 0 <= level < levels:
        return None
    downsample = 2 ** (levels - 1 - level)
    width, height = -(-pyramid.width // downsample), -(-pyramid.height // downsample)
    if x < 0 or y < 0 or x * size >= width or y * size >= height:
        return None
    found = results(inference)
    centres, side = found["centres"], float(found["side"])
    probabilities = found["probabilities"].astype(np.float32)
    classes = probabilities.shape[1]
    left, top = x * size * downsample, y * size * downsample
    span = size * downsample
    near = (
        found["tissue"]
        & (centres[:, 0] + side / 2 > left)
        & (centres[:, 0] - side / 2 < left + span)
        & (centres[:, 1] + side / 2 > top)
        & (centres[:, 1] - side / 2 < top + span)
    )
    tile = np.zeros((size, size, 4), dtype=np.uint8)
    palette = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in PALETTE], dtype=np.uint8)
    for (cx, cy), row in zip(centres[near], probabilities[near], strict=True):
        best = int(row.argmax())
        sure = (float(row[best]) - 1 / classes) / (1 - 1 / classes)
        x0 = int(np.floor((cx - side / 2 - left) / downsample))
        y0 = int(np.floor((cy - side / 2 - top) / downsample))
        x1 = int(np.ceil((cx + side / 2 - left) / downsample))
        y1 = int(np.ceil((cy + side / 2 - top) / downsample))
        box = tile[max(0, y0) : max(0, min(size, y1)), max(0, x0) : max(0, min(size, x1))]
        box[..., :3] = palette[best % len(palette)]
        box[..., 3] = int(round(255 * min(1.0, max(0.0, sure))))
    out = io.BytesIO()
    Image.fromarray(tile, "RGBA").save(out, format="PNG", optimize=False, compress_level=3)
    return out.getvalue()
