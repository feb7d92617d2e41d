"""Synthetic whole-slide images for tests, demos and benchmarks: tissue-like regions (pink
stroma with purple nuclei) on a white background, written as pyramidal JPEG-compressed TIFFs with
tifffile – as a generic tiled TIFF or in the Aperio SVS layout (full resolution, thumbnail,
lower resolutions, label, macro), both of which OpenSlide reads.

`Blob`s describe the tissue (ellipses in full-resolution pixels); pixels are made tile by tile,
so large slides are written without holding them in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Blob:
    """An ellipse of tissue: centre and radii in full-resolution pixels; `texture` 0 or 1 picks
    one of two clearly different tissue textures."""

    cx: float
    cy: float
    rx: float
    ry: float
    texture: int = 0


def _texture(kind: int, size: int, seed: int) -> np.ndarray:
    """A tileable size × size RGB tissue texture."""
    rng = np.random.default_rng(seed + 7919 * kind)
    if kind == 0:  # H&E-like: pink stroma, round purple nuclei
        base = np.array([232, 160, 200], dtype=np.float32)
        image = np.empty((size, size, 3), dtype=np.float32)
        image[...] = base
        image += rng.normal(0, 10, (size, size, 1))
        yy, xx = np.mgrid[0:size, 0:size]
        for _ in range(size * size // 500):
            x, y, r = rng.integers(0, size), rng.integers(0, size), rng.integers(3, 7)
            d = ((xx - x + size // 2) % size - size // 2) ** 2 + (
                (yy - y + size // 2) % size - size // 2
            ) ** 2
            image[d <= r * r] = (110, 60, 150)
    else:  # stripes of brown (IHC-like) fibres on pale blue
        image = np.empty((size, size, 3), dtype=np.float32)
        image[...] = (190, 200, 225)
        yy, xx = np.mgrid[0:size, 0:size]
        waves = np.sin((xx + 0.5 * yy) * (2 * np.pi / 32) + rng.normal(0, 0.3, (size, size)))
        image[waves > 0.55] = (140, 90, 50)
        image += rng.normal(0, 8, (size, size, 1))
    return np.clip(image, 0, 255).astype(np.uint8)


class SyntheticSlide:
    """Pixels of a synthetic slide, by rectangle."""

    def __init__(self, width: int, height: int, blobs: list[Blob], seed: int = 1):
        self.width, self.height, self.blobs = width, height, blobs
        self.textures = [_texture(kind, 256, seed) for kind in (0, 1)]
        self.rng = np.random.default_rng(seed)
        # faint noise on the glass, so background is not perfectly flat
        self.glass = np.clip(245 + np.random.default_rng(seed + 1).normal(0, 3, (256, 256, 1)), 0, 255)
        self.glass = np.repeat(self.glass, 3, axis=2).astype(np.uint8)

    def region(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        out = np.empty((height, width, 3), dtype=np.uint8)
        ys = (np.arange(y, y + height) % 256)[:, None]
        xs = (np.arange(x, x + width) % 256)[None, :]
        out[...] = self.glass[ys, xs]
        yy, xx = np.mgrid[y : y + height, x : x + width]
        for blob in self.blobs:
            if (
                blob.cx + blob.rx < x
                or blob.cx - blob.rx > x + width
                or blob.cy + blob.ry < y
                or blob.cy - blob.ry > y + height
            ):
                continue
            inside = ((xx - blob.cx) / blob.rx) ** 2 + ((yy - blob.cy) / blob.ry) ** 2 <= 1
            out[inside] = self.textures[blob.texture][ys, xs][inside]
        outside = (yy >= self.height) | (xx >= self.width)
        out[outside] = 255
        return out

    def tiles(self, tile: int, scale: int = 1) -> Iterator[np.ndarray]:
        """Tiles in TIFF order (rows of columns) of the slide downsampled by `scale`."""
        width, height = -(-self.width // scale), -(-self.height // scale)
        for ty in range(0, height, tile):
            for tx in range(0, width, tile):
                if scale == 1:
                    yield self.region(tx, ty, tile, tile)
                else:
                    big = self.region(tx * scale, ty * scale, tile * scale, tile * scale)
                    yield big.reshape(tile, scale, tile, scale, 3).mean(axis=(1, 3)).astype(np.uint8)

    def image(self, scale: int) -> np.ndarray:
        width, height = -(-self.width // scale), -(-self.height // scale)
        big = self.region(0, 0, width * scale, height * scale)
        return big.reshape(height, scale, width, scale, 3).mean(axis=(1, 3)).astype(np.uint8)


def write_slide(
    path: str | Path,
    width: int,
    height: int,
    blobs: list[Blob],
    *,
    mpp: float = 0.25,
    tile: int = 256,
    layout: str = "generic",
    seed: int = 1,
    quality: int = 92,
) -> Path:
    """Write a pyramidal, tiled, JPEG-compressed TIFF. `layout`: "generic" (a tiled TIFF with
    reduced-resolution pages, resolution tags in centimetres) or "aperio" (SVS: the Aperio image
    description with MPP and AppMag, a thumbnail strip page, lower levels, label and macro)."""
    import tifffile

    path = Path(path)
    slide = SyntheticSlide(width, height, blobs, seed)
    scales = [1]
    while max(width, height) // (scales[-1] * 4) >= tile and len(scales) < 6:
        scales.append(scales[-1] * 4)
    per_cm = 10_000 / mpp
    options = {
        "tile": (tile, tile),
        "compression": "jpeg",
        "compressionargs": {"level": quality},
        "photometric": "rgb",
    }
    with tifffile.TiffWriter(path, bigtiff=width * height > 2**31) as tiff:
        for number, scale in enumerate(scales):
            w, h = -(-width // scale), -(-height // scale)
            description = ""
            if layout == "aperio":
                description = (
                    f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] "
                    f"({tile}x{tile}) "
                    f"JPEG/RGB Q={quality}|AppMag = {round(10 / mpp)}|MPP = {mpp}|ScanScope ID = SYNTH"
                    f"|Filename = synthetic|Date = 01/02/26|Time = 10:00:00"
                )
                if number > 0:
                    description = f"Aperio Image Library v12.0.15 \r\n{w}x{h} -> {w}x{h}"
            tiff.write(
                slide.tiles(tile, scale),
                shape=(h, w, 3),
                dtype=np.uint8,
                description=description or None,
                resolution=(per_cm / scale, per_cm / scale),
                resolutionunit="CENTIMETER",
                subfiletype=0 if number == 0 or layout == "aperio" else 1,
                metadata=None,
                **options,
            )
            if layout == "aperio" and number == 0:  # the thumbnail follows the first page, in strips
                thumb = slide.image(max(1, max(width, height) // 768))
                tiff.write(
                    thumb,
                    description="Aperio Image Library v12.0.15 \r\nthumbnail",
                    metadata=None,
                    compression="jpeg",
                    photometric="rgb",
                    rowsperstrip=16,
                )
        if layout == "aperio":
            label = np.full((300, 300, 3), 240, dtype=np.uint8)
            label[100:200, 50:250] = (20, 20, 20)
            tiff.write(
                label,
                description="Aperio Image Library v12.0.15 \r\nlabel 300x300",
                metadata=None,
                subfiletype=1,
                compression="lzw",
                photometric="rgb",
                rowsperstrip=300,
            )
            macro = slide.image(max(1, max(width, height) // 600))
            tiff.write(
                macro,
                description="Aperio Image Library v12.0.15 \r\nmacro 600x300",
                metadata=None,
                subfiletype=9,
                compression="jpeg",
                photometric="rgb",
                rowsperstrip=16,
            )
    return path


def write_large_slide(
    path: str | Path,
    width: int,
    height: int,
    blobs: list[Blob],
    *,
    mpp: float = 0.25,
    seed: int = 1,
    quality: int = 90,
) -> Path:
    """A large synthetic slide written with libvips (streaming, on every core): the same textures,
    tissue where the blobs are, as a pyramidal tiled JPEG TIFF (256-pixel tiles) that OpenSlide
    reads as generic TIFF. For benchmarks: 32,768² pixels take about a minute."""
    import pyvips

    path = Path(path)
    textures = [
        pyvips.Image.new_from_memory(_texture(kind, 256, seed).tobytes(), 256, 256, 3, "uchar")
        for kind in (0, 1)
    ]
    glass_pixels = np.clip(245 + np.random.default_rng(seed + 1).normal(0, 3, (256, 256, 1)), 0, 255)
    glass_pixels = np.repeat(glass_pixels, 3, axis=2).astype(np.uint8)
    glass = pyvips.Image.new_from_memory(glass_pixels.tobytes(), 256, 256, 3, "uchar")
    across, down = -(-width // 256), -(-height // 256)
    image = glass.replicate(across, down).crop(0, 0, width, height)
    # Masks at 1/16 of the size, drawn with numpy, enlarged without smoothing.
    step = 16
    small_w, small_h = -(-width // step), -(-height // step)
    yy, xx = np.mgrid[0:small_h, 0:small_w].astype(np.float32) * step + step / 2
    for kind in (0, 1):
        mask = np.zeros((small_h, small_w), dtype=np.uint8)
        for blob in blobs:
            if blob.texture == kind:
                mask[((xx - blob.cx) / blob.rx) ** 2 + ((yy - blob.cy) / blob.ry) ** 2 <= 1] = 255
        if not mask.any():
            continue
        big = (
            pyvips.Image.new_from_memory(mask.tobytes(), small_w, small_h, 1, "uchar")
            .resize(step, kernel="nearest")
            .crop(0, 0, width, height)
        )
        tissue = textures[kind].replicate(across, down).crop(0, 0, width, height)
        image = (big > 0).ifthenelse(tissue, image)
    per_mm = 1000 / mpp
    image = image.copy(interpretation="srgb", xres=per_mm, yres=per_mm)
    image.tiffsave(
        str(path),
        tile=True,
        tile_width=256,
        tile_height=256,
        pyramid=True,
        compression="jpeg",
        Q=quality,
        bigtiff=True,
        resunit="cm",
    )
    return path
