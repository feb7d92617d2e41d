"""Patches of a slide for patch classifiers: a fixed physical size, read through the slide reader
(`pathology.pyramid.SlidePyramid`).

- The patch side in microns becomes level-0 pixels with the slide's microns per pixel; a slide
  without them cannot be sampled (`PatchError` asks for a value). Regions are read at the
  coarsest level that still has at least the network's input size in pixels.
- Training (`sample`): a region √2 larger than the patch around a random point of the tissue
  grid (so that any rotation leaves no corner empty), drawn again while a Canny check finds too
  few edges (background, blur), then a random rotation, random flips, the centre crop, resizing
  to the input size and a slight colour jitter. A seed makes every draw reproducible.
- Inference (`tissue_grid`, `read_patch`): a regular grid of patches covering every tissue tile.
  The inference reads it in batches of neighbouring patches (`GridPatches.plan`, `read_batch`):
  every tile is decoded once for all the patches on it (and kept for the next batch beside it),
  with the very pixels `read_patch` gives; loader processes read ahead (`GridPatches.batches`,
  as many as `loader_workers` gives the device), even in a Celery worker's pool process.
- `SlidePatches` and `GridPatches` are torch `Dataset`s over that: each loader worker opens its
  own readers (a reader is per thread and per process).
"""

from __future__ import annotations

import math
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import IterableDataset

from pathology.pyramid import BACKGROUND, SlidePyramid, decode_tile

EDGE_FRACTION = 0.02  # a patch with fewer Canny edge pixels than this is drawn again
DRAWS = 8  # tries per training patch before the last one is taken anyway
WHITE_LEVEL, WHITE_SHARE = 220, 0.9  # near-white pixels; a patch with more of them is glass
PREFETCH = 4  # batches each inference loader process reads ahead
SHARED_MEMORY = Path("/dev/shm")  # noqa: S108 (only its free space is read)


class PatchError(Exception):
    """A slide that cannot be sampled as asked (the message says why)."""


@dataclass(frozen=True)
class PatchSpec:
    microns: float  # side of a patch at the slide
    input_size: int  # side of the network's input, pixels
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def of(cls, version) -> PatchSpec:
        """The patches a registered model version takes."""
        norm = version.normalisation
        return cls(version.patch_microns, version.input_size, tuple(norm["mean"]), tuple(norm["std"]))


def patch_side(spec: PatchSpec, mpp: float | None) -> float:
    """The patch side in level-0 (full resolution) pixels."""
    if mpp is None or not math.isfinite(float(mpp)) or float(mpp) <= 0:
        raise PatchError(
            f"The slide has no microns per pixel, so patches of {spec.microns:g} µm cannot be cut: "
            "give its microns per pixel (mpp)."
        )
    return spec.microns / float(mpp)


def reading_level(reader: SlidePyramid, side: float, input_size: int) -> int:
    """The coarsest level at which a patch still spans at least `input_size` pixels."""
    for level in range(reader.level_count):  # level 0 is the coarsest
        if side / reader.level_info(level).downsample >= input_size:
            return level
    return reader.level_count - 1


def tissue_grid(reader: SlidePyramid, side: float) -> list[tuple[float, float]]:
    """Centres (level-0 pixels) of a grid of `side`-sized patches covering every tissue tile."""
    size = reader.tile_size
    cells: set[tuple[int, int]] = set()
    for tx, ty in reader.tissue_tiles():
        first_x, last_x = int(tx * size // side), int(((tx + 1) * size - 1) // side)
        first_y, last_y = int(ty * size // side), int(((ty + 1) * size - 1) // side)
        for cx in range(first_x, last_x + 1):
            for cy in range(first_y, last_y + 1):
                cells.add((cx, cy))
    return [((cx + 0.5) * side, (cy + 0.5) * side) for cx, cy in sorted(cells, key=lambda c: (c[1], c[0]))]


def read_patch(reader: SlidePyramid, centre: tuple[float, float], side: float, spec: PatchSpec) -> np.ndarray:
    """The patch around `centre` as input_size² RGB uint8 (no augmentation: inference)."""
    region = _read(reader, centre, side, spec.input_size)
    return np.asarray(Image.fromarray(region).resize((spec.input_size, spec.input_size), Image.BILINEAR))


def _read(reader: SlidePyramid, centre: tuple[float, float], side: float, input_size: int) -> np.ndarray:
    level = reading_level(reader, side, input_size)
    downsample = reader.level_info(level).downsample
    pixels = max(1, round(side / downsample))
    x = round(centre[0] / downsample - pixels / 2)
    y = round(centre[1] / downsample - pixels / 2)
    return reader.read_region(level, x, y, pixels, pixels)


def edge_fraction(patch: np.ndarray) -> float:
    """Share of pixels Canny finds on an edge (grey levels of the patch)."""
    from skimage.feature import canny

    grey = patch.astype(np.float32).mean(axis=2) / 255.0
    return float(canny(grey, sigma=1.0).mean())


def augment(region: np.ndarray, side_pixels: int, spec: PatchSpec, rng: np.random.Generator) -> np.ndarray:
    """Random rotation and flips, the centre crop of `side_pixels`, resizing, slight colour jitter."""
    image = Image.fromarray(region).rotate(
        float(rng.uniform(0, 360)), resample=Image.BILINEAR, fillcolor=(255, 255, 255)
    )
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_TOP_BOTTOM)
    left = (image.width - side_pixels) // 2
    top = (image.height - side_pixels) // 2
    image = image.crop((left, top, left + side_pixels, top + side_pixels))
    patch = np.asarray(image.resize((spec.input_size, spec.input_size), Image.BILINEAR), dtype=np.float32)
    brightness = rng.uniform(0.95, 1.05)
    contrast = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-6, 6, size=3)  # per channel: a slight hue and saturation change
    mean = patch.mean()
    patch = (patch - mean) * contrast + mean * brightness + shift
    return np.clip(patch, 0, 255).astype(np.uint8)


def sample(
    reader: SlidePyramid,
    centres: list[tuple[float, float]],
    side: float,
    spec: PatchSpec,
    rng: np.random.Generator,
) -> np.ndarray:
    """One training patch: a random point of the tissue grid, augmented; drawn again while it
    shows too few edges (up to DRAWS times)."""
    if not centres:
        raise PatchError("The slide has no tissue tiles to sample.")
    level = reading_level(reader, side, spec.input_size)
    downsample = reader.level_info(level).downsample
    side_pixels = max(1, round(side / downsample))
    patch = None
    for _ in range(DRAWS):
        cx, cy = centres[int(rng.integers(len(centres)))]
        centre = (cx + rng.uniform(-side / 2, side / 2), cy + rng.uniform(-side / 2, side / 2))
        region = _read(reader, centre, side * math.sqrt(2), spec.input_size)
        patch = augment(region, side_pixels, spec, rng)
        if edge_fraction(patch) >= EDGE_FRACTION:
            break
    return patch


def to_input(patches: np.ndarray, spec: PatchSpec) -> np.ndarray:
    """N × S × S × 3 uint8 → N × 3 × S × S float32, scaled to 0–1 and normalised."""
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1)
    return (np.asarray(patches, dtype=np.float32).transpose(0, 3, 1, 2) / 255.0 - mean) / std


@dataclass(frozen=True)
class SlideItem:
    """A slide to sample for training: its pyramid, microns per pixel and class index."""

    pyramid: str
    mpp: float | None
    label: int


class _Readers:
    """Readers opened by the process that uses them (loader workers are processes); none is
    copied to another one."""

    def __init__(self):
        self.owner, self.open = None, {}

    def get(self, path: str) -> SlidePyramid:
        if self.owner != os.getpid():
            self.owner, self.open = os.getpid(), {}
        if path not in self.open:
            self.open[path] = SlidePyramid(path, threads=1)
        return self.open[path]

    def __getstate__(self) -> dict:
        return {"owner": None, "open": {}}


class SlidePatches:
    """Training patches: `length` draws per epoch, spread evenly over the slides; item i of epoch
    e is the same for the same seed whatever the worker (its own generator from seed, e, i).
    A torch Dataset (map-style): (N × 3 × S × S float tensor, class index)."""

    def __init__(self, slides: list[SlideItem], spec: PatchSpec, length: int, seed: int = 0):
        if not slides:
            raise PatchError("No slides to sample.")
        self.slides, self.spec, self.length, self.seed, self.epoch = slides, spec, length, seed, 0
        self.readers = _Readers()
        self.grids: dict[str, tuple[float, list]] = {}
        for item in slides:  # checked here, once: missing mpp or no tissue is said at the start
            reader = SlidePyramid(item.pyramid, threads=1)
            try:
                side = patch_side(spec, item.mpp)
                centres = tissue_grid(reader, side)
                if not centres:
                    raise PatchError(f"{Path(item.pyramid).name}: no tissue tiles to sample.")
                self.grids[item.pyramid] = (side, centres)
            finally:
                reader.close()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        import torch

        item = self.slides[index % len(self.slides)]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        side, centres = self.grids[item.pyramid]
        patch = sample(self.readers.get(item.pyramid), centres, side, self.spec, rng)
        return torch.from_numpy(to_input(patch[None], self.spec)[0]), item.label


def is_tissue(patch: np.ndarray) -> bool:
    """Not glass: at most WHITE_SHARE of the pixels near white (the pyramid builder's rule). A
    grid cell of a tissue tile may still be all glass; it is left out of maps and votes."""
    return float((patch.min(axis=2) >= WHITE_LEVEL).mean()) <= WHITE_SHARE


def _tissue(patches: np.ndarray) -> np.ndarray:
    """`is_tissue` of N × S × S × 3 patches at once (channel by channel: a minimum over the last,
    3-long axis is slow in numpy)."""
    white = patches[..., 0] >= WHITE_LEVEL
    white &= patches[..., 1] >= WHITE_LEVEL
    white &= patches[..., 2] >= WHITE_LEVEL
    pixels = patches.shape[1] * patches.shape[2]
    share = np.count_nonzero(white.reshape(len(patches), pixels), axis=1) / max(1, pixels)
    return share <= WHITE_SHARE


class _Tiles:
    """Decoded tiles of one level of a pyramid, the most recently used kept (up to `budget`
    bytes); None for a tile that is not stored (background) or outside the level."""

    def __init__(self, reader: SlidePyramid, level: int, budget: int = 64 << 20):
        self.reader, self.level = reader, level
        self.info = reader.level_info(level)
        size = reader.tile_size
        self.keep = max(8, budget // (size * size * 3))
        self.decoded: dict[tuple[int, int], np.ndarray | None] = {}

    def get(self, tx: int, ty: int) -> np.ndarray | None:
        key = (tx, ty)
        if key in self.decoded:
            self.decoded[key] = pixels = self.decoded.pop(key)  # now the most recent
            return pixels
        pixels = None
        if 0 <= tx < self.info.columns and 0 <= ty < self.info.rows:
            data = self.reader.tile(self.level, tx, ty)
            pixels = None if data is None else decode_tile(data)
        if len(self.decoded) >= self.keep:
            del self.decoded[next(iter(self.decoded))]  # the least recently used
        self.decoded[key] = pixels
        return pixels

    def region(self, x: int, y: int, pixels: int) -> np.ndarray:
        """The pixels × pixels square at (x, y) of the level, as `read_region` gives it: a view
        of the tile where one tile holds it all."""
        size = self.reader.tile_size
        first_x, first_y = x // size, y // size
        last_x, last_y = (x + pixels - 1) // size, (y + pixels - 1) // size
        if first_x == last_x and first_y == last_y:
            tile = self.get(first_x, first_y)
            if tile is not None:
                left, top = x - first_x * size, y - first_y * size
                return tile[top : top + pixels, left : left + pixels]
        out = np.empty((pixels, pixels, 3), dtype=np.uint8)
        out[...] = BACKGROUND
        for ty in range(first_y, last_y + 1):
            for tx in range(first_x, last_x + 1):
                tile = self.get(tx, ty)
                if tile is None:
                    continue
                left, top = max(x, tx * size), max(y, ty * size)
                right, bottom = min(x + pixels, (tx + 1) * size), min(y + pixels, (ty + 1) * size)
                out[top - y : bottom - y, left - x : right - x] = tile[
                    top - ty * size : bottom - ty * size, left - tx * size : right - tx * size
                ]
        return out


class GridPatches:
    """Inference patches of one slide: every point of its tissue grid, in order.

    A torch Dataset, one patch an item: (3 × S × S float tensor, index into `centres`, whether the
    patch shows tissue). The inference reads it in batches instead (`batches`): the same pixels,
    a compact part of the slide at a time, every tile decoded once for all the patches on it."""

    def __init__(self, pyramid: str, mpp: float | None, spec: PatchSpec):
        self.pyramid, self.spec = pyramid, spec
        self.readers = _Readers()
        reader = SlidePyramid(pyramid, threads=1)
        try:
            self.side = patch_side(spec, mpp)
            self.centres = tissue_grid(reader, self.side)
            self.level = reading_level(reader, self.side, spec.input_size)
            self.downsample = reader.level_info(self.level).downsample
        finally:
            reader.close()

    def __len__(self) -> int:
        return len(self.centres)

    def __getitem__(self, index: int):
        import torch

        patch = read_patch(self.readers.get(self.pyramid), self.centres[index], self.side, self.spec)
        return torch.from_numpy(to_input(patch[None], self.spec)[0]), index, is_tissue(patch)

    def plan(self, batch_size: int) -> list[np.ndarray]:
        """Indexes of the patches in batches of `batch_size` (the last one shorter): the grid cut
        into squares of about a batch (√batch_size cells a side), squares in rows, cells in rows
        within a square; a batch is a compact part of the slide and the next one lies beside it."""
        if not self.centres:
            return []
        cells = (np.asarray(self.centres, dtype=np.float64) // self.side).astype(np.int64)
        square = max(1, math.isqrt(batch_size))
        order = np.lexsort((cells[:, 0], cells[:, 1], cells[:, 0] // square, cells[:, 1] // square))
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]

    def tiles(self) -> _Tiles:
        """Decoded tiles of the reading level, for this process."""
        return _Tiles(self.readers.get(self.pyramid), self.level)

    def read_batch(self, indexes, tiles: _Tiles | None = None, out: np.ndarray | None = None):
        """Patches `indexes` as N × S × S × 3 uint8 (into `out` where given) and whether each
        shows tissue: the pixels of `read_patch`, cut from `tiles` (kept from batch to batch)."""
        size = self.spec.input_size
        tiles = self.tiles() if tiles is None else tiles
        if out is None:
            out = np.empty((len(indexes), size, size, 3), dtype=np.uint8)
        downsample = self.downsample
        pixels = max(1, round(self.side / downsample))
        for position, index in enumerate(indexes):
            cx, cy = self.centres[index]  # placed as `_read` places it
            region = tiles.region(
                round(cx / downsample - pixels / 2), round(cy / downsample - pixels / 2), pixels
            )
            if pixels != size:
                region = np.asarray(Image.fromarray(region).resize((size, size), Image.BILINEAR))
            out[position] = region
        return out, _tissue(out)

    def batches(self, batch_size: int, workers: int = 0, pin_memory: bool = False):
        """An iterator of (N × S × S × 3 uint8 tensor, int64 indexes, bool tissue) over the
        batches of the plan, read by `workers` loader processes ahead of the caller (0: by the
        caller, when asked); `pin_memory`: page-locked, for copies to the GPU that run while the
        next batch is read. Each worker reads its own run of batches, in order, up to PREFETCH
        ahead; they pass them through shared memory, so there are fewer of them where /dev/shm is
        small (a container's is 64 MiB unless it is given more)."""
        from torch.utils.data import DataLoader

        if workers > 0 and SHARED_MEMORY.is_dir():
            held = PREFETCH * batch_size * self.spec.input_size**2 * 3  # bytes, per worker
            workers = min(workers, shutil.disk_usage(SHARED_MEMORY).free // (2 * held))
        loader = DataLoader(
            GridBatches(self, batch_size),
            batch_size=None,
            num_workers=workers,
            pin_memory=pin_memory,
            prefetch_factor=PREFETCH if workers else None,
        )
        with children_allowed():
            return iter(loader)


def loader_workers(device: str) -> int:
    """Loader processes for inference on `device` ("cpu", "cuda", ...).

    - GPU: every core but one reads (the one left runs the network and page-locks batches),
      so that loading keeps up with the GPU.
    - CPU: none; the caller reads between batches. The network's threads use every core, and a
      loader would take one from them in the middle of a batch, stalling all of them (measured:
      slower, and more CPU time, than reading in turn); reading is a small part of the work
      there (resnet18 at 224 pixels about 3 %, patchnet at 64 about 15 %)."""
    if not device.startswith("cuda"):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(32, max(1, cores - 1))


@contextmanager
def children_allowed():
    """Loader workers may start here even in a daemonic process. A Celery worker's pool
    processes are daemonic, and multiprocessing refuses children to those (it could not wait
    for them at the end); loader workers end with their loader and leave by themselves when
    their parent dies, so the rule is lifted while they start."""
    import multiprocessing

    process = multiprocessing.current_process()
    daemonic = process._config.get("daemon", False)
    process._config["daemon"] = False
    try:
        yield
    finally:
        process._config["daemon"] = daemonic


class GridBatches(IterableDataset):
    """The batches of a `GridPatches` plan as a torch IterableDataset: each loader worker takes
    one run of consecutive batches and reads it in order, keeping the tiles it decoded last
    (the batch beside the last one shares a column of them)."""

    def __init__(self, grid: GridPatches, batch_size: int):
        self.grid, self.plan = grid, grid.plan(batch_size)

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self):
        import torch

        worker = torch.utils.data.get_worker_info()
        run = self.plan
        if worker is not None:
            share = -(-len(run) // worker.num_workers)
            run = run[worker.id * share : (worker.id + 1) * share]
        tiles = self.grid.tiles()
        for indexes in run:
            pixels, tissue = self.grid.read_batch(indexes, tiles)
            yield torch.from_numpy(pixels), torch.from_numpy(indexes), torch.from_numpy(tissue)
