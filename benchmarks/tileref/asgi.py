"""The references' ASGI application: Django for `/bare/` and `/li/`, and `/raw/<level>/<x>/<y>`
answered by a plain ASGI handler before Django (the same blobs, no framework at all): the limit
of the portal's own tile path, which also answers in front of Django."""

import os
import re
import sqlite3

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.tileref.settings")
django_app = get_asgi_application()
RAW = re.compile(r"^/raw/(\d+)/(\d+)/(\d+)$")
_db = None


async def application(scope, receive, send):
    global _db
    match = RAW.match(scope.get("path", "")) if scope["type"] == "http" else None
    if match is None:
        return await django_app(scope, receive, send)
    if _db is None:
        _db = sqlite3.connect(f"file:{os.environ['BENCH_PYRAMID']}?mode=ro&immutable=1", uri=True)
    row = _db.execute(
        "SELECT data FROM tiles WHERE level = ? AND x = ? AND y = ?", tuple(map(int, match.groups()))
    ).fetchone()
    body = row[0] if row else b""
    await send(
        {
            "type": "http.response.start",
            "status": 200 if row else 404,
            "headers": [(b"content-type", b"image/jpeg"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
