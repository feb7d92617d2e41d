"""The two reference views (see the package docstring)."""

from __future__ import annotations

import io
import os
import sqlite3
import threading

from django.http import HttpResponse, HttpResponseNotFound
from django.urls import path

_local = threading.local()
TILE = int(os.environ.get("BENCH_TILE_SIZE", "512"))


def bare(request, level: int, x: int, y: int):
    db = getattr(_local, "db", None)
    if db is None:
        db = _local.db = sqlite3.connect(f"file:{os.environ['BENCH_PYRAMID']}?mode=ro&immutable=1", uri=True)
    row = db.execute("SELECT data FROM tiles WHERE level = ? AND x = ? AND y = ?", (level, x, y)).fetchone()
    if row is None:
        return HttpResponseNotFound()
    return HttpResponse(row[0], content_type="image/jpeg")


_source = None
_lock = threading.Lock()


def large_image_tile(request, level: int, x: int, y: int):
    global _source
    import large_image

    with _lock:
        if _source is None:
            _source = large_image.open(os.environ["BENCH_SOURCE"])
        data, mime = _source.getRegion(
            region={"left": x * TILE, "top": y * TILE, "width": TILE, "height": TILE, "units": "base_pixels"},
            format=large_image.constants.TILE_FORMAT_IMAGE,
            encoding="JPEG",
            jpegQuality=90,
        )
    return HttpResponse(data if isinstance(data, bytes) else io.BytesIO(data).getvalue(), content_type=mime)


urlpatterns = [
    path("bare/<int:level>/<int:x>/<int:y>", bare),
    path("li/<int:level>/<int:x>/<int:y>", large_image_tile),
]
