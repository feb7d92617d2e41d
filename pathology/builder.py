"""Building a slide pyramid (`pathology/pyramid.py` documents the file) from a scanner file.

1. Full resolution: the slide is cut into tiles of `tile_size` on a square padded to
   tile_size · 2^n. Each tile is read and classified: background when more than
   `max_white_fraction` of its pixels are near white (all channels ≥ `white_level`), or when a
   Canny detector finds edges in less than `min_edge_fraction` of it (glass, smudges, flat pen
   marks). Tissue tiles are encoded and stored; background tiles are not stored at all.
2. Islands: groups of tissue tiles (touching, diagonals included) smaller than
   `min_island_tiles` are removed (dust, debris).
3. Lower levels: each tile is its four children, each decoded straight at half size (JPEG DCT
   scaling), down to level 0, a single tile. A tile whose children are all background is
   background.

Reading, classifying and encoding run in `workers` threads (OpenSlide, Pillow and numpy release
the GIL); SQLite is written from the calling thread only. Memory stays bounded: at most a few
rows of tiles are in flight. No Django here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pathology import pyramid
from pathology.sources import SlideSource

Progress = Callable[[float, str], None]


@dataclass
class PyramidOptions:
    """How a slide is converted; stored with the pyramid (`filters` in its metadata)."""

    tile_size: int = 512
    tile_format: str = "jpeg"  # or "png"
    quality: int = 90
    white_level: int = 220  # 0–255: a pixel with every channel at least this is near white
    max_white_fraction: float = 0.9  # more near-white pixels than this: background
    min_edge_fraction: float = 0.02  # Canny edge pixels below this fraction: background
    canny_sigma: float = 1.5
    min_island_tiles: int = 3  # tissue groups of fewer tiles are removed (1: keep all)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)

    def filters(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("workers")
        return data

    def check(self) -> None:
        problems = []
        if self.tile_size not in (128, 256, 512, 1024):
            problems.append("tile_size is 128, 256, 512 or 1024")
        if self.tile_format not in ("jpeg", "png"):
            problems.append("tile_format is jpeg or png")
        if not 30 <= self.quality <= 100:
            problems.append("quality is from 30 to 100")
        if not 0 <= self.white_level <= 255:
            problems.append("white_level is from 0 to 255")
        if not 0 <= self.max_white_fraction <= 1:
            problems.append("max_white_fraction is from 0 to 1")
        if not 0 <= self.min_edge_fraction <= 1:
            problems.append("min_edge_fraction is from 0 to 1")
        if not 0.1 <= self.canny_sigma <= 10:
            problems.append("canny_sigma is from 0.1 to 10")
        if not 1 <= self.min_island_tiles <= 10_000:
            problems.append("min_island_tiles is from 1 to 10000")
        if problems:
            raise ValueError("; ".join(problems))


EDGE_CHECK_SIZE = 128  # tiles are checked for edges at this size (fast, and noise averages out)


def classify_tile(pixels: np.ndarray, options: PyramidOptions) -> tuple[bool, float, float]:
    """(is tissue, near-white fraction, edge fraction) of an RGB tile."""
    from skimage.feature import canny

    # (an elementwise minimum of the channels: numpy's min over a last axis of 3 is slow)
    darkest = np.minimum(np.minimum(pixels[..., 0], pixels[..., 1]), pixels[..., 2])
    white = np.count_nonzero(darkest >= options.white_level) / darkest.size
    if white > options.max_white_fraction:
        return False, white, 0.0
    small = np.asarray(
        Image.fromarray(pixels).convert("L").resize((EDGE_CHECK_SIZE, EDGE_CHECK_SIZE), Image.Resampling.BOX),
        dtype=np.float32,
    )
    edges = float(canny(small / 255.0, sigma=options.canny_sigma).mean())
    return edges >= options.min_edge_fraction, white, edges


def small_islands(mask: np.ndarray, min_tiles: int) -> list[tuple[int, int]]:
    """(x, y) of tissue tiles in groups (8-connected) of fewer than `min_tiles`."""
    if min_tiles <= 1 or not mask.any():
        return []
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    small = np.flatnonzero(sizes < min_tiles)
    small = small[small != 0]
    ys, xs = np.nonzero(np.isin(labels, small))
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


@dataclass
class BuildResult:
    path: Path
    width: int
    height: int
    levels: int
    tile_size: int
    tissue_tiles: int
    background_tiles: int
    removed_island_tiles: int
    tile_counts: list[int]
    seconds: float
    metadata: dict[str, Any]


def _bounded(items: Iterator, submit: Callable[[Any], Future], window: int) -> Iterator[Any]:
    """Submit work for `items` with at most `window` in flight; yield results in order."""
    pending: list[Future] = []
    for item in items:
        pending.append(submit(item))
        if len(pending) >= window:
            yield pending.pop(0).result()
    for future in pending:
        yield future.result()


def build_slide_pyramid(
    source: SlideSource,
    target: str | Path,
    options: PyramidOptions | None = None,
    *,
    progress: Progress | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> BuildResult:
    """Convert `source` into the pyramid file `target` (written under a temporary name, moved into
    place at the end). `progress(fraction, message)` is called as it goes."""
    options = options or PyramidOptions()
    options.check()
    report = progress or (lambda fraction, message: None)
    started = time.monotonic()
    size = options.tile_size
    levels = pyramid.levels_for(source.width, source.height, size)
    top = levels - 1
    columns, rows = -(-source.width // size), -(-source.height // size)
    writer = pyramid.PyramidWriter(target)
    workers = max(1, options.workers)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="pyramid") as pool:
            # 1. full resolution, a row of tiles per task
            def full_row(y: int) -> tuple[int, list[tuple[int, bytes]], int]:
                kept, background = [], 0
                for x in range(columns):
                    pixels = source.read(x * size, y * size, size, size)
                    tissue, _, _ = classify_tile(pixels, options)
                    if tissue:
                        kept.append((x, pyramid.encode_tile(pixels, options.tile_format, options.quality)))
                    else:
                        background += 1
                return y, kept, background

            mask = np.zeros((rows, columns), dtype=bool)
            background_tiles = 0
            report(0.0, f"Reading {columns * rows:,} tiles at full resolution")
            for done, (y, kept, background) in enumerate(
                _bounded(iter(range(rows)), lambda y: pool.submit(full_row, y), workers * 2), 1
            ):
                writer.put_tiles((top, x, y, data) for x, data in kept)
                for x, _ in kept:
                    mask[y, x] = True
                background_tiles += background
                report(0.75 * done / rows, f"Reading and filtering: row {done:,} of {rows:,}")

            # 2. islands
            removed = small_islands(mask, options.min_island_tiles)
            writer.delete_tiles(top, removed)
            for x, y in removed:
                mask[y, x] = False
            report(0.76, f"Removed {len(removed):,} tiles of small islands; building lower levels")

            # 3. lower levels
            half = size // 2

            def parent_tile(level: int, px: int, py: int, children: list[tuple[int, int, bytes]]) -> tuple:
                canvas = np.empty((size, size, 3), dtype=np.uint8)
                canvas[...] = pyramid.BACKGROUND
                for cx, cy, data in children:
                    part = pyramid.decode_tile(data, half)
                    ox, oy = (cx - 2 * px) * half, (cy - 2 * py) * half
                    canvas[oy : oy + half, ox : ox + half] = part
                return level, px, py, pyramid.encode_tile(canvas, options.tile_format, options.quality)

            tile_counts = [0] * levels
            tile_counts[top] = int(mask.sum())
            child_rows = rows
            for level in range(top - 1, -1, -1):
                parent_rows = -(-child_rows // 2)

                def jobs(level=level, parent_rows=parent_rows) -> Iterator[tuple]:
                    for py in range(parent_rows):
                        grouped: dict[int, list[tuple[int, int, bytes]]] = {}
                        for cx, cy, data in writer.tiles_in_rows(level + 1, 2 * py, 2 * py + 1):
                            grouped.setdefault(cx // 2, []).append((cx, cy, data))
                        for px, children in grouped.items():
                            yield level, px, py, children

                count = 0
                batch = []
                for result in _bounded(jobs(), lambda job: pool.submit(parent_tile, *job), workers * 4):
                    batch.append(result)
                    count += 1
                    if len(batch) >= 64:
                        writer.put_tiles(batch)
                        batch.clear()
                writer.put_tiles(batch)
                tile_counts[level] = count
                child_rows = parent_rows
                report(0.76 + 0.2 * (top - level) / max(top, 1), f"Built level {level} ({count:,} tiles)")

        # 4. associated images, metadata
        report(0.97, "Keeping thumbnail, label and macro images")
        images = {}
        try:
            images = source.associated_images()
        except Exception:  # noqa: BLE001 - damaged associated images do not stop a slide
            images = {}
        for name, image in images.items():
            writer.put_image(name, image)
        if "thumbnail" not in images:
            writer.put_image("thumbnail", _thumbnail(writer, source.width, source.height, size, top))
        metadata = {
            "format": pyramid.FORMAT,
            "version": pyramid.VERSION,
            "width": source.width,
            "height": source.height,
            "tile_size": size,
            "levels": levels,
            "tile_format": options.tile_format,
            "background": list(pyramid.BACKGROUND),
            "mpp_x": source.mpp_x,
            "mpp_y": source.mpp_y,
            "objective_power": source.objective_power,
            "vendor": source.vendor,
            "reader": source.reader,
            "properties": source.properties,
            "filters": options.filters(),
            "tissue_tiles": tile_counts[top],
            "background_tiles": background_tiles,
            "removed_island_tiles": len(removed),
            "tile_counts": tile_counts,
            **(extra_metadata or {}),
        }
        writer.set_metadata(metadata)
        path = writer.commit()
    except BaseException:
        writer.abort()
        raise
    report(1.0, "Pyramid ready")
    return BuildResult(
        path=path,
        width=source.width,
        height=source.height,
        levels=levels,
        tile_size=size,
        tissue_tiles=tile_counts[top],
        background_tiles=background_tiles,
        removed_island_tiles=len(removed),
        tile_counts=tile_counts,
        seconds=time.monotonic() - started,
        metadata=metadata,
    )


def _thumbnail(writer: pyramid.PyramidWriter, width: int, height: int, size: int, top: int) -> Image.Image:
    """The slide at level 0 (one tile), cut to the slide's own shape."""
    data = writer.get_tile(0, 0, 0)
    tile = pyramid.decode_tile(data) if data else np.full((size, size, 3), 255, dtype=np.uint8)
    scale = 2**top
    return Image.fromarray(tile[: max(1, -(-height // scale)), : max(1, -(-width // scale))])
