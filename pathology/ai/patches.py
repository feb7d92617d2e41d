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
- `SlidePatches` and `GridPatches` are torch `Dataset`s over that: each loader worker opens its
  own readers (a reader is per thread and per process).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pathology.pyramid import SlidePyramid

EDGE_FRACTION = 0.02  # a patch with fewer Canny edge pixels than this is drawn again
DRAWS = 8  # tries per training patch before the last one is taken anyway
WHITE_LEVEL, WHITE_SHARE = 220, 0.9  # near-white pixels; a patch with more of them is glass


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
    """Readers opened by the process and thread that use them (loader workers are processes)."""

    def __init__(self):
        self.owner, self.open = None, {}

    def get(self, path: str) -> SlidePyramid:
        if self.owner != os.getpid():
            self.owner, self.open = os.getpid(), {}
        if path not in self.open:
            self.open[path] = SlidePyramid(path, threads=1)
        return self.open[path]


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


class GridPatches:
    """Inference patches of one slide: every point of its tissue grid, in order. A torch Dataset:
    (3 × S × S float tensor, index into `centres`, whether the patch shows tissue)."""

    def __init__(self, pyramid: str, mpp: float | None, spec: PatchSpec):
        self.pyramid, self.spec = pyramid, spec
        self.readers = _Readers()
        reader = SlidePyramid(pyramid, threads=1)
        try:
            self.side = patch_side(spec, mpp)
            self.centres = tissue_grid(reader, self.side)
        finally:
            reader.close()

    def __len__(self) -> int:
        return len(self.centres)

    def __getitem__(self, index: int):
        import torch

        patch = read_patch(self.readers.get(self.pyramid), self.centres[index], self.side, self.spec)
        return torch.from_numpy(to_input(patch[None], self.spec)[0]), index, is_tissue(patch)
