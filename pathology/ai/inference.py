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

import functools
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
    from pathology.ai.registry import require_classifier
    from portal.services.jobs import start_job

    require_classifier(version)
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
        # as many loader processes as the device needs (`patches.loader_workers`)
        probabilities, tissue = predict_patches(module, grid, batch_size=64, device=where)
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
    """The stored per-patch results as arrays (for maps, votes and the API). A finished
    inference's file never changes, so the last few read are kept (a map's tiles read it often)."""
    return _read_results(str(Path(settings.PORTAL_DATA_DIR) / inference.path))


@functools.lru_cache(maxsize=16)
def _read_results(path: str) -> dict:
    import numpy as np

    with np.load(path) as data:
        found = {key: data[key] for key in data.files}
    for array in found.values():
        array.setflags(write=False)  # shared between callers
    return found


# Okabe–Ito colours (told apart with every common colour-vision deficiency), one per class.
PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#0072B2", "#D55E00", "#F0E442", "#000000"]


def colours(classes: list[str]) -> dict[str, str]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(classes)}


def map_cells(inference: Inference):
    """The diagnosis map at one pixel per grid cell (RGBA: the most likely class's colour, alpha
    by how sure the model is; clear where no tissue patch is) and the cell side in level-0
    pixels; kept for the last few maps, whose tiles are asked for together."""
    return _map_cells(str(Path(settings.PORTAL_DATA_DIR) / inference.path))


@functools.lru_cache(maxsize=16)
def _map_cells(path: str):
    import numpy as np

    found = _read_results(path)
    side = float(found["side"])
    probabilities = found["probabilities"].astype(np.float32)
    classes = probabilities.shape[1]
    index = np.floor(found["centres"] / side).astype(np.int64)  # centres sit mid-cell
    cells = np.zeros(
        (int(index[:, 1].max(initial=-1)) + 1, int(index[:, 0].max(initial=-1)) + 1, 4), np.uint8
    )
    tissue = found["tissue"]
    best = probabilities.argmax(axis=1)
    sure = (probabilities.max(axis=1) - 1 / classes) / (1 - 1 / classes)
    palette = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in PALETTE], dtype=np.uint8)
    colour = np.concatenate(
        [palette[best % len(palette)], np.round(255 * np.clip(sure, 0, 1)).astype(np.uint8)[:, None]], axis=1
    )
    cells[index[tissue, 1], index[tissue, 0]] = colour[tissue]
    cells.setflags(write=False)
    return cells, side


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
    cells, side = map_cells(inference)
    # Edge tiles end with the slide, as the slide's Deep Zoom tiles do (a viewer stretches a
    # tile over its place: a full-size edge tile would be drawn squeezed).
    rows, columns = min(size, height - y * size), min(size, width - x * size)
    # Each tile pixel takes the grid cell under its centre (level-0 pixels; cells are `side` wide).
    column_of = np.floor(((x * size + np.arange(columns) + 0.5) * downsample) / side).astype(np.int64)
    row_of = np.floor(((y * size + np.arange(rows) + 0.5) * downsample) / side).astype(np.int64)
    inside_x = column_of < cells.shape[1]
    inside_y = row_of < cells.shape[0]
    tile = np.zeros((rows, columns, 4), dtype=np.uint8)
    tile[np.ix_(inside_y, inside_x)] = cells[np.ix_(row_of[inside_y], column_of[inside_x])]
    out = io.BytesIO()
    Image.fromarray(tile, "RGBA").save(out, format="PNG", optimize=False, compress_level=3)
    return out.getvalue()
