"""Serving a pyramid: stored tiles, Deep Zoom tiles for OpenSeadragon, regions, associated images.

Pyramid files are immutable once written (a new conversion writes a new file), so open readers
are kept per thread and responses carry strong ETags.

Deep Zoom numbers its levels from a 1-pixel image (level 0) up to full resolution
(level ceil(log2(max(width, height)))); its tiles stop at the image's edge. The pyramid's
levels map onto the top ones; edge tiles are cut to size and the Deep Zoom levels below the
pyramid's single-tile level are made from that tile.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from pathology.pyramid import BACKGROUND, SlidePyramid, decode_tile, encode_tile

MAX_REGION_PIXELS = 64 * 1024 * 1024
_local = threading.local()
_OPEN_PER_THREAD = 32


def open_pyramid(path: Path) -> SlidePyramid:
    """A reader of `path`, kept open for this thread (a few dozen at most)."""
    cache: OrderedDict[str, SlidePyramid] = getattr(_local, "pyramids", None) or OrderedDict()
    _local.pyramids = cache
    key = str(path)
    reader = cache.get(key)
    if reader is None:
        reader = SlidePyramid(path)
        cache[key] = reader
        while len(cache) > _OPEN_PER_THREAD:
            cache.popitem(last=False)[1].close()
    else:
        cache.move_to_end(key)
    return reader


def dzi_max_level(pyramid: SlidePyramid) -> int:
    return max(0, math.ceil(math.log2(max(pyramid.width, pyramid.height, 1))))


def dzi_descriptor(pyramid: SlidePyramid) -> str:
    fmt = "png" if pyramid.metadata.get("tile_format") == "png" else "jpeg"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" Overlap="0" '
        f'TileSize="{pyramid.tile_size}"><Size Width="{pyramid.width}" Height="{pyramid.height}"/></Image>'
    )


def _background(width: int, height: int) -> np.ndarray:
    out = np.empty((height, width, 3), dtype=np.uint8)
    out[...] = BACKGROUND
    return out


class NoSuchTileError(Exception):
    """The tile is outside the image (404)."""


def _dzi_place(pyramid: SlidePyramid, dz_level: int, x: int, y: int) -> tuple[int, int, int]:
    """(pyramid level, width, height) of a Deep Zoom tile; the level is negative below the
    pyramid's single top tile."""
    top = dzi_max_level(pyramid)
    if not 0 <= dz_level <= top or x < 0 or y < 0:
        raise NoSuchTileError("no such level")
    scale = 2 ** (top - dz_level)
    width, height = -(-pyramid.width // scale), -(-pyramid.height // scale)
    size = pyramid.tile_size
    if x * size >= width or y * size >= height:
        raise NoSuchTileError("no such tile")
    return (
        pyramid.level_count - 1 - (top - dz_level),
        min(size, width - x * size),
        min(size, height - y * size),
    )


def dzi_tile_if_stored(pyramid: SlidePyramid, dz_level: int, x: int, y: int) -> bytes | None:
    """The Deep Zoom tile when it is a whole stored (or background) tile, else None (`dzi_tile`
    makes it)."""
    level, tile_w, tile_h = _dzi_place(pyramid, dz_level, x, y)
    size = pyramid.tile_size
    if level < 0 or tile_w != size or tile_h != size:
        return None
    return pyramid.tile(level, x, y) or background_tile(size, pyramid.metadata.get("tile_format", "jpeg"))


def dzi_tile(pyramid: SlidePyramid, dz_level: int, x: int, y: int) -> bytes:
    """The Deep Zoom tile (encoded like the pyramid's tiles)."""
    level, tile_w, tile_h = _dzi_place(pyramid, dz_level, x, y)
    size = pyramid.tile_size
    fmt = pyramid.metadata.get("tile_format", "jpeg")
    if level >= 0:
        data = pyramid.tile(level, x, y)
        if data is not None and tile_w == size and tile_h == size:
            return data  # the stored tile as it is: the common case
        pixels = decode_tile(data)[:tile_h, :tile_w] if data is not None else _background(tile_w, tile_h)
        return encode_tile(np.ascontiguousarray(pixels), fmt)
    # Smaller than the pyramid's single top tile: shrink that one.
    data = pyramid.tile(0, 0, 0)
    if data is None:
        return encode_tile(_background(tile_w, tile_h), fmt)
    shrink = 2 ** (-level)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = image.resize((max(1, size // shrink), max(1, size // shrink)), Image.Resampling.BOX)
    return encode_tile(np.ascontiguousarray(np.asarray(image)[:tile_h, :tile_w]), fmt)


def stored_tile(pyramid: SlidePyramid, level: int, x: int, y: int) -> bytes:
    """A tile of the pyramid's own grid (full size; background tiles made white)."""
    info = pyramid.level_info(level)
    if not (0 <= x < info.columns and 0 <= y < info.rows):
        raise NoSuchTileError("no such tile")
    data = pyramid.tile(level, x, y)
    if data is None:
        return background_tile(pyramid.tile_size, pyramid.metadata.get("tile_format", "jpeg"))
    return data


_backgrounds: dict[tuple[int, str], bytes] = {}


def background_tile(size: int, fmt: str) -> bytes:
    key = (size, fmt)
    if key not in _backgrounds:
        _backgrounds[key] = encode_tile(_background(size, size), fmt)
    return _backgrounds[key]


def encode_region(pixels: np.ndarray, fmt: str, quality: int = 90) -> tuple[bytes, str]:
    """Region pixels as (bytes, content type): png, jpeg, or npy (numpy's .npy format)."""
    if fmt == "npy":
        out = io.BytesIO()
        np.save(out, pixels, allow_pickle=False)
        return out.getvalue(), "application/x-npy"
    if fmt == "jpeg":
        return encode_tile(pixels, "jpeg", quality), "image/jpeg"
    return encode_tile(pixels, "png"), "image/png"
