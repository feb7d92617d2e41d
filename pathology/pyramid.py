"""The slide pyramid file: one SQLite database per converted slide, readable without OpenSlide.

Layout (documented in docs/slide-pyramid.md):

- `tiles(level, x, y, data)`: JPEG (or PNG) tiles of `tile_size` × `tile_size` pixels. Level
  `levels - 1` is full resolution; each level below halves it, down to level 0, a single tile
  that covers the whole slide. The slide sits at the top left of a square of
  `tile_size · 2^(levels - 1)` pixels; a tile that is not stored is background (`background`,
  white). Tiles on the right and bottom edge are full size, padded with background.
- `metadata(key, value)`: JSON values – `format`, `version`, `width`, `height`, `tile_size`,
  `levels`, `tile_format`, `mpp_x`, `mpp_y`, `objective_power`, `vendor`, `properties` (the
  source's own), `filters`, `tissue_tiles`, `tile_counts`, `source_sha256`, `source_name`.
- `images(name, format, width, height, data)`: the thumbnail, label and macro images.

`SlidePyramid` reads it: tiles, any region at any level as a numpy array; `PyramidWriter` writes
it. Neither imports Django, so training code can use this module alone.
"""

from __future__ import annotations

import io
import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FORMAT = "portal-slide-pyramid"
VERSION = 1
BACKGROUND = (255, 255, 255)

SCHEMA = """
CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tiles (
    level INTEGER NOT NULL, x INTEGER NOT NULL, y INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (level, x, y)
) WITHOUT ROWID;
CREATE TABLE images (
    name TEXT PRIMARY KEY, format TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    data BLOB NOT NULL
);
"""


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _decode_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="pyramid-decode")
        return _pool


class PyramidError(Exception):
    """The file is not a slide pyramid this code can read, or a request is out of its bounds."""


def levels_for(width: int, height: int, tile_size: int) -> int:
    """How many levels a slide of this size gets: the full-resolution level plus halvings down
    to one tile (the side padded to tile_size · 2^(levels - 1))."""
    side = max(width, height, 1)
    return math.ceil(math.log2(side / tile_size)) + 1 if side > tile_size else 1


def encode_tile(pixels: np.ndarray, tile_format: str = "jpeg", quality: int = 90) -> bytes:
    out = io.BytesIO()
    image = Image.fromarray(pixels)
    if tile_format == "png":
        image.save(out, "PNG", compress_level=3)
    else:
        image.save(out, "JPEG", quality=quality, subsampling=0 if quality >= 95 else 2)
    return out.getvalue()


def decode_tile(data: bytes, size: int | None = None) -> np.ndarray:
    """Tile bytes as an RGB array; `size`: decode straight to a smaller size where the codec can
    (JPEG's DCT scaling, what building lower levels uses), else resize."""
    image = Image.open(io.BytesIO(data))
    if size is not None and image.format == "JPEG":
        image.draft("RGB", (size, size))
    if image.mode != "RGB":
        image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BOX)
    return np.asarray(image)


@dataclass(frozen=True)
class Level:
    """One level: its number, size in pixels and grid of tiles (over the slide, not the padding)."""

    level: int
    width: int
    height: int
    columns: int
    rows: int
    downsample: int


class SlidePyramid:
    """Read a slide pyramid file: `tile(level, x, y)`, `read_region(...)`, levels and metadata.

    Opened read-only; safe to share between threads only with one instance per thread (SQLite
    connections are per thread). Region coordinates are pixels of the level asked for.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None):
        self.path = Path(path)
        # Tiles of a region are decoded side by side (JPEG decoding releases the GIL), in a pool
        # all readers of the process share; `threads=1`: one after the other, here.
        self.threads = min(4, os.cpu_count() or 1) if threads is None else max(1, threads)
        if not self.path.is_file():
            raise PyramidError(f"{self.path}: no such file")
        try:
            self._db = sqlite3.connect(
                f"file:{self.path}?mode=ro&immutable=1", uri=True, check_same_thread=False
            )
            rows = self._db.execute("SELECT key, value FROM metadata").fetchall()
        except sqlite3.DatabaseError as exc:
            raise PyramidError(f"{self.path}: not a slide pyramid ({exc})") from None
        self.metadata: dict[str, Any] = {key: json.loads(value) for key, value in rows}
        if self.metadata.get("format") != FORMAT:
            raise PyramidError(f"{self.path}: not a slide pyramid (format {self.metadata.get('format')!r})")
        if int(self.metadata.get("version", 0)) > VERSION:
            raise PyramidError(
                f"{self.path}: pyramid version {self.metadata['version']} is newer than this reader"
            )
        self.width = int(self.metadata["width"])
        self.height = int(self.metadata["height"])
        self.tile_size = int(self.metadata["tile_size"])
        self.level_count = int(self.metadata["levels"])
        self.mpp = (self.metadata.get("mpp_x"), self.metadata.get("mpp_y"))
        self.levels = [self.level_info(level) for level in range(self.level_count)]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SlidePyramid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def level_info(self, level: int) -> Level:
        if not 0 <= level < self.level_count:
            raise PyramidError(f"level {level} does not exist (0 to {self.level_count - 1})")
        downsample = 2 ** (self.level_count - 1 - level)
        width, height = -(-self.width // downsample), -(-self.height // downsample)
        return Level(
            level, width, height, -(-width // self.tile_size), -(-height // self.tile_size), downsample
        )

    def tile(self, level: int, x: int, y: int) -> bytes | None:
        """The stored tile, or None for background."""
        row = self._db.execute(
            "SELECT data FROM tiles WHERE level = ? AND x = ? AND y = ?", (level, x, y)
        ).fetchone()
        return row[0] if row else None

    def tile_count(self, level: int | None = None) -> int:
        if level is None:
            return self._db.execute("SELECT count(*) FROM tiles").fetchone()[0]
        return self._db.execute("SELECT count(*) FROM tiles WHERE level = ?", (level,)).fetchone()[0]

    def tissue_tiles(self) -> set[tuple[int, int]]:
        """(x, y) of the stored full-resolution tiles: where tissue was found."""
        rows = self._db.execute("SELECT x, y FROM tiles WHERE level = ?", (self.level_count - 1,))
        return set(rows.fetchall())

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Pixels of a rectangle at `level` as an RGB uint8 array (height, width, 3); outside the
        slide and where tiles are background it is white."""
        info = self.level_info(level)
        if width <= 0 or height <= 0:
            raise PyramidError("a region needs a positive width and height")
        size = self.tile_size
        out = np.empty((height, width, 3), dtype=np.uint8)
        out[...] = BACKGROUND
        first_x, first_y = max(0, x // size), max(0, y // size)
        last_x = min((x + width - 1) // size, info.columns - 1)
        last_y = min((y + height - 1) // size, info.rows - 1)
        if last_x < first_x or last_y < first_y:
            return out
        rows = self._db.execute(
            "SELECT x, y, data FROM tiles WHERE level = ? AND x BETWEEN ? AND ? AND y BETWEEN ? AND ?",
            (level, first_x, last_x, first_y, last_y),
        ).fetchall()
        if len(rows) > 1 and self.threads > 1:
            decoded = _decode_pool().map(decode_tile, [row[2] for row in rows])
        else:
            decoded = (decode_tile(row[2]) for row in rows)
        for (tx, ty, _), pixels in zip(rows, decoded, strict=True):
            # the part of this tile inside the region, in tile and in region coordinates
            left, top = max(x, tx * size), max(y, ty * size)
            right, bottom = min(x + width, (tx + 1) * size), min(y + height, (ty + 1) * size)
            out[top - y : bottom - y, left - x : right - x] = pixels[
                top - ty * size : bottom - ty * size, left - tx * size : right - tx * size
            ]
        return out

    def image(self, name: str) -> tuple[str, bytes] | None:
        """An associated image (thumbnail, label, macro): (format, bytes), or None."""
        row = self._db.execute("SELECT format, data FROM images WHERE name = ?", (name,)).fetchone()
        return (row[0], row[1]) if row else None

    def image_names(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM images ORDER BY name")]


class PyramidWriter:
    """Writes a pyramid file at `path` (replacing it only when `commit()`ed: it is written beside
    it under a temporary name first)."""

    def __init__(self, path: str | Path, *, threads: int | None = None):
        self.path = Path(path)
        # Tiles of a region are decoded side by side (JPEG decoding releases the GIL), in a pool
        # all readers of the process share; `threads=1`: one after the other, here.
        self.threads = min(4, os.cpu_count() or 1) if threads is None else max(1, threads)
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.partial.unlink(missing_ok=True)
        self._db = sqlite3.connect(self.partial, check_same_thread=False)
        self._db.executescript(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA page_size = 8192;"
        )
        self._db.executescript(SCHEMA)

    def put_tiles(self, tiles: Iterable[tuple[int, int, int, bytes]]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO tiles (level, x, y, data) VALUES (?, ?, ?, ?)", tiles)

    def delete_tiles(self, level: int, positions: Iterable[tuple[int, int]]) -> None:
        self._db.executemany(
            "DELETE FROM tiles WHERE level = ? AND x = ? AND y = ?", ((level, x, y) for x, y in positions)
        )

    def get_tile(self, level: int, x: int, y: int) -> bytes | None:
        row = self._db.execute(
            "SELECT data FROM tiles WHERE level = ? AND x = ? AND y = ?", (level, x, y)
        ).fetchone()
        return row[0] if row else None

    def tiles_in_rows(self, level: int, first_row: int, last_row: int) -> list[tuple[int, int, bytes]]:
        return self._db.execute(
            "SELECT x, y, data FROM tiles WHERE level = ? AND y BETWEEN ? AND ?", (level, first_row, last_row)
        ).fetchall()

    def put_image(self, name: str, image: Image.Image) -> None:
        out = io.BytesIO()
        image = image.convert("RGB")
        image.save(out, "JPEG", quality=90)
        self._db.execute(
            "INSERT OR REPLACE INTO images (name, format, width, height, data) VALUES (?, 'jpeg', ?, ?, ?)",
            (name, image.width, image.height, out.getvalue()),
        )

    def set_metadata(self, values: dict[str, Any]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO metadata (key, value) VALUES (?, ?)",
            ((key, json.dumps(value)) for key, value in values.items()),
        )

    def commit(self) -> Path:
        self._db.commit()
        self._db.execute("VACUUM")  # drops the pages of removed islands; tiles stored in key order
        self._db.close()
        with open(self.partial, "rb") as handle:
            os.fsync(handle.fileno())
        self.partial.replace(self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._db.close()
        finally:
            self.partial.unlink(missing_ok=True)
