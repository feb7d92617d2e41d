"""Slide tiles served in front of Django: the hot path of the viewer and of tile clients.

A viewer asks for dozens of tiles a second; going through Django's middleware, REST framework and
two or three database queries for each costs more than reading the tile. `TileServer` wraps the
ASGI application and answers `GET /api/v1/slides/<id>/tiles/<level>/<x>/<y>` and
`GET /api/v1/slides/<id>/deepzoom_files/<level>/<x>_<y>.<format>` itself (everything else passes
through to Django, where the same URLs have ordinary views for the test client and the schema):

- who asks: a bearer token (`read` scope) or the session cookie, resolved like Django and the API
  do, then kept for `PATHOLOGY_TILE_CACHE_SECONDS`;
- may they: one query (the slide among those the user may view, with its pyramid), kept as long;
- the tile: read from the pyramid file (kept open), sent with a strong ETag and private caching.

In steady state a tile costs no database query; a revoked token, a finished session or a removed
membership stops tiles within `PATHOLOGY_TILE_CACHE_SECONDS` (10 by default).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from channels.db import database_sync_to_async
from django.conf import settings

from pathology.pyramid import PyramidError
from pathology.services import tiles
from portal import asgi_auth

TILE_PATH = re.compile(
    r"^/api/v1/slides/(?P<slide>\d{1,18})/(?:tiles/(?P<level>\d{1,3})/(?P<x>\d{1,9})/(?P<y>\d{1,9})"
    r"|deepzoom_files/(?P<dz>\d{1,3})/(?P<dx>\d{1,9})_(?P<dy>\d{1,9})\.(?P<fmt>[a-z0-9]{1,8}))$"
)


@dataclass
class Principal:
    user: object | None  # None: not signed in
    since: float


@dataclass
class Access:
    found: bool
    path: Path | None = None
    etag: str = ""
    tile_format: str = "jpeg"
    not_ready: bool = False
    since: float = 0.0


_principals: dict[tuple[str, str], Principal] = {}
_access: dict[tuple[int, int], Access] = {}


def clear_caches() -> None:
    _principals.clear()
    _access.clear()


def _ttl() -> float:
    return float(settings.PATHOLOGY_TILE_CACHE_SECONDS)


def load_principal(kind: str, secret: str):
    """The user behind a token or session (None if there is none): one or two queries."""
    if kind == "token":
        return asgi_auth.user_for_token(secret, ["read"])
    return asgi_auth.user_for_session(secret)


def load_access(user, slide_id: int) -> Access:
    """Whether `user` may view the slide, and its pyramid: one query."""
    from pathology.models import Slide

    row = (
        Slide.objects.for_user(user, "view")
        .filter(pk=slide_id)
        .values_list("pyramid__path", "pyramid__sha256", "pyramid__options_key", "pyramid__tile_format")
        .first()
    )
    if row is None:
        return Access(found=False)
    path, sha, key, fmt = row
    if path is None:
        return Access(found=True, not_ready=True)
    return Access(
        found=True, path=Path(settings.PORTAL_DATA_DIR) / path, etag=f"{sha[:16]}-{key[:8]}", tile_format=fmt
    )


async def _respond(send, status: int, body: bytes, content_type: str, extra=(), head: bool = False) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"vary", b"Cookie, Authorization"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _error(send, status: int, detail: str, code: str, extra=()) -> None:
    await _respond(
        send, status, json.dumps({"detail": detail, "code": code}).encode(), "application/json", extra
    )


class TileServer:
    """ASGI wrapper: tile requests are answered here, everything else goes to `app`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            match = TILE_PATH.match(scope["path"])
            if match:
                return await self.serve(scope, send, match)
        return await self.app(scope, receive, send)

    async def serve(self, scope, send, match) -> None:
        now = time.monotonic()
        head = scope["method"] == "HEAD"
        credentials = asgi_auth.credentials(scope)
        principal = _principals.get(credentials) if credentials else None
        ttl = _ttl()
        if credentials and (principal is None or now - principal.since >= ttl):
            user = await database_sync_to_async(load_principal)(*credentials)
            principal = Principal(user, now)
            asgi_auth.remember(_principals, credentials, principal)
        if principal is None or principal.user is None:
            return await _error(
                send,
                401,
                "Authentication credentials were not provided or are not valid.",
                "not_authenticated",
                [(b"www-authenticate", b'Bearer realm="api"')],
            )
        user = principal.user
        slide_id = int(match["slide"])
        access = _access.get((user.pk, slide_id))
        if access is None or now - access.since >= ttl:
            access = await database_sync_to_async(load_access)(user, slide_id)
            access.since = now
            asgi_auth.remember(_access, (user.pk, slide_id), access)
        if not access.found:
            return await _error(send, 404, "No such slide.", "not_found")
        if access.not_ready:
            return await _error(send, 409, "The slide has no pyramid yet (it is not converted).", "not_ready")
        if match["level"] is not None:
            kind, level, x, y = "t", int(match["level"]), int(match["x"]), int(match["y"])
        else:
            kind, level, x, y = "dz", int(match["dz"]), int(match["dx"]), int(match["dy"])
            if match["fmt"] not in ("jpeg", "jpg", "png"):
                return await _error(
                    send, 404, "Tiles are .jpeg (or .png where the pyramid stores PNG).", "not_found"
                )
        etag = f'"{access.etag}-{kind}-{level}-{x}-{y}"'.encode()
        caching = [(b"etag", etag), (b"cache-control", b"private, max-age=86400")]
        for name, value in scope.get("headers", []):
            if name == b"if-none-match" and value == etag:
                await send({"type": "http.response.start", "status": 304, "headers": caching})
                return await send({"type": "http.response.body", "body": b""})
        try:
            data = self.read(access.path, kind, level, x, y)
            if data is None:  # a tile to cut or shrink: image work, off the event loop
                data = await asyncio.to_thread(self.make, access.path, level, x, y)
        except (tiles.NoSuchTileError, PyramidError):
            return await _error(send, 404, "No such tile.", "not_found")
        content_type = "image/png" if access.tile_format == "png" else "image/jpeg"
        await _respond(send, 200, data, content_type, caching, head)

    @staticmethod
    def read(path: Path, kind: str, level: int, x: int, y: int) -> bytes | None:
        """A stored tile as it is (fast enough for the event loop), or None if it must be made."""
        pyramid = tiles.open_pyramid(path)
        if kind == "t":
            return tiles.stored_tile(pyramid, level, x, y)
        return tiles.dzi_tile_if_stored(pyramid, level, x, y)

    @staticmethod
    def make(path: Path, level: int, x: int, y: int) -> bytes:
        return tiles.dzi_tile(tiles.open_pyramid(path), level, x, y)
