"""Benchmark of AI inference: patches per second through the inference job's whole pipeline
beside the network alone, on the same machine in the same run.

A synthetic slide (20,480 × 15,360 pixels at 0.46 µm per pixel, three tissue regions of both
textures; 10,240 × 7,680 with --quick) is converted by the portal's pyramid builder (512-pixel
JPEG tiles). Two networks, as the registry keeps them (TorchScript, evaluation mode), batches
of 64:

- resnet18 at 224 pixels on 112 µm patches, the realistic case: 4,203 grid patches (1,140 with
  --quick), read at full resolution and resized from 243 pixels, across tile edges;
- patchnet at its default 64 pixels on 128 µm patches (3,278; 890), read at a quarter of the
  resolution and resized from 70 pixels.

Each round measures (a) the network alone on pre-made, normalised tensors already on the
device (the first batch of the slide), softmax and results fetched as the job does, and (b) the
pipeline exactly as the job runs it: `GridPatches` and `predict_patches` (tile reads, decoding,
resizing, the tissue check, copying, normalising, the network) over the same number of patches.
Rounds alternate the two, so that other work on the machine slows both sides alike; the figures
are patches per second over all rounds. On a GPU every round covers the whole grid; on a CPU,
resnet18 takes 256 patches a round (128 with --quick), the next part of the grid each time.

The device is chosen as the job chooses it (CUDA when torch sees a GPU). Target (issue): the
pipeline reaches ≥ 80 % of the network alone. Needs no database: run alone with
`.venv/bin/python -m benchmarks.ai [--quick]`.
"""

from __future__ import annotations

import copy
import os
import sys
import time

FULL = {"width": 20480, "height": 15360, "rounds": 6, "cpu_patches": 256}
QUICK = {"width": 10240, "height": 7680, "rounds": 3, "cpu_patches": 128}
MPP = 0.46
BATCH = 64
# (network, patch side in µm, input pixels)
MODELS = [("resnet18", 112.0, 224), ("patchnet", 128.0, 64)]
NORMALISATION = ((0.72, 0.55, 0.74), (0.16, 0.2, 0.15))


def slide_blobs(width: int, height: int):
    from pathology.synthetic import Blob

    sx, sy = width / 20480, height / 15360
    return [
        Blob(5600 * sx, 7700 * sy, 5200 * sx, 7000 * sy, 0),
        Blob(14800 * sx, 6000 * sy, 5200 * sx, 5400 * sy, 1),
        Blob(15500 * sx, 12500 * sy, 4200 * sx, 2600 * sy, 0),
    ]


def make_pyramid(width: int, height: int, log=print):
    """The converted synthetic slide (made once, kept under the benchmark's state folder)."""
    from benchmarks.__main__ import STATE
    from pathology.builder import PyramidOptions, build_slide_pyramid
    from pathology.sources import open_slide_source
    from pathology.synthetic import write_large_slide

    work = STATE / "ai"
    work.mkdir(parents=True, exist_ok=True)
    target = work / f"synthetic-{width}x{height}.pyramid"
    if not target.exists():
        source = work / f"synthetic-{width}x{height}.tif"
        log(f"ai: writing and converting a synthetic {width:,} × {height:,} slide")
        write_large_slide(source, width, height, slide_blobs(width, height), mpp=MPP)
        build_slide_pyramid(open_slide_source(source), target, PyramidOptions(tile_size=512))
        source.unlink()
    return target


def device_text(device: str) -> str:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if device.startswith("cuda"):
        return f"cuda ({torch.cuda.get_device_name()}), {cores} CPU cores"
    return f"cpu ({cores} cores, {torch.get_num_threads()} torch threads)"


def synchronise(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def alone(module, inputs, count: int, device: str) -> float:
    """Seconds the network takes on pre-made tensors for `count` patches, in batches as the job
    runs them (softmax kept on the device, fetched at the end)."""
    import torch

    synchronise(device)
    start = time.perf_counter()
    found = []
    with torch.no_grad():
        for first in range(0, count, BATCH):
            batch = inputs[: min(BATCH, count - first)]
            found.append(torch.softmax(module(batch), dim=1).float())
    torch.cat(found).cpu()
    return time.perf_counter() - start


def pipeline(module, grid, device: str) -> float:
    """Seconds the inference job's path takes over every patch of `grid`."""
    from pathology.ai.training import predict_patches

    synchronise(device)
    start = time.perf_counter()
    predict_patches(module, grid, batch_size=BATCH, device=device)
    return time.perf_counter() - start


def bench_model(pyramid, architecture: str, microns: float, size: int, device: str, sizes: dict, log):
    import torch

    from pathology.ai import networks
    from pathology.ai.patches import GridPatches, PatchSpec, loader_workers

    spec = PatchSpec(microns, size, *NORMALISATION)
    grid = GridPatches(str(pyramid), MPP, spec)
    torch.manual_seed(0)
    module = networks.scripted(networks.build(architecture, 3)).to(device)
    inputs = torch.stack([grid[i][0] for i in range(BATCH)]).to(device)
    cuda = device.startswith("cuda")
    count = len(grid) if cuda or architecture != "resnet18" else min(len(grid), sizes["cpu_patches"])
    warm = copy.copy(grid)
    warm.centres = grid.centres[: 2 * BATCH]
    for _ in range(3):  # TorchScript settles on its second or third call
        alone(module, inputs, BATCH, device)
    pipeline(module, warm, device)
    log(f"ai: {architecture} at {size} px, {sizes['rounds']} rounds of {count:,} patches on {device}")
    alone_seconds = pipeline_seconds = 0.0
    for round_number in range(sizes["rounds"]):
        part = copy.copy(grid)
        first = round_number * count % len(grid)
        part.centres = (grid.centres[first:] + grid.centres[:first])[:count]
        alone_seconds += alone(module, inputs, count, device)
        pipeline_seconds += pipeline(module, part, device)
    patches = count * sizes["rounds"]
    return {
        "architecture": architecture,
        "size": size,
        "microns": microns,
        "grid": len(grid),
        "count": count,
        "alone": patches / alone_seconds,
        "pipeline": patches / pipeline_seconds,
        "ratio": alone_seconds / pipeline_seconds,
        "workers": loader_workers(device),
        "level": f"1/{grid.downsample}" if grid.downsample > 1 else "full",
        "read": round(grid.side / grid.downsample),
    }


def bench_ai(quick: bool = False, *, log=print) -> tuple[list[tuple[str, float, float, str]], list[str]]:
    import torch

    sizes = QUICK if quick else FULL
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pyramid = make_pyramid(sizes["width"], sizes["height"], log)
    results = [bench_model(pyramid, *model, device, sizes, log) for model in MODELS]
    where = device_text(device)
    rows = [
        (
            f"AI inference, {r['architecture']} {r['size']} px, whole pipeline on {device} (patches/s)",
            r["pipeline"],
            r["alone"],
            "the network alone on pre-made tensors",
        )
        for r in results
    ]
    section = [
        "",
        "## AI inference",
        "",
        f"Device: {where}; torch {torch.__version__}. Synthetic slide of {sizes['width']:,} × "
        f"{sizes['height']:,} pixels at {MPP} µm per pixel, converted by the portal's builder "
        "(512-pixel JPEG tiles); TorchScript networks, batches of 64. "
        f"{sizes['rounds']} rounds, each the network alone and then the pipeline; patches/s over all rounds.",
        "",
        "| Network | Patches (grid) | Read | Loader processes | Pipeline (patches/s) "
        "| Network alone (patches/s) | Ratio | Target |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        section.append(
            f"| {r['architecture']} {r['size']} px, {r['microns']:g} µm | {r['count']:,} ({r['grid']:,}) "
            f"| {r['read']} px at {r['level']} resolution | {r['workers']} | {r['pipeline']:.1f} "
            f"| {r['alone']:.1f} "
            f"| {r['ratio']:.2f} | {'≥ 0.80' if r['architecture'] == 'resnet18' else ''} |"
        )
    section += [
        "",
        "The pipeline is the inference job's own path (`GridPatches` and `predict_patches`): "
        "loader processes (as many as `patches.loader_workers` gives the device) read batches of "
        "neighbouring patches, each tile decoded once for all its patches, as uint8; scaling and "
        "normalising happen on the "
        "device. The network alone runs on the first batch of the slide, already normalised and on "
        "the device.",
    ]
    return rows, section


def main() -> int:
    from benchmarks.__main__ import print_section

    return print_section(*bench_ai("--quick" in sys.argv))


if __name__ == "__main__":
    sys.exit(main())
