"""Who is asking, for the few ASGI handlers that answer in front of Django (slide tiles, upload
chunks): a bearer token or the session cookie, resolved as Django and the API resolve them."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from importlib import import_module
from types import SimpleNamespace

from django.conf import settings


def credentials(scope) -> tuple[str, str] | None:
    """("token", secret) for `Authorization: Bearer`, else ("session", key) for the session
    cookie, else None."""
    cookie_name = settings.SESSION_COOKIE_NAME.encode()
    session = None
    for name, value in scope.get("headers", []):
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return "token", value[7:].decode("latin-1").strip()
        if name == b"cookie":
            for part in value.split(b";"):
                key, _, val = part.strip().partition(b"=")
                if key == cookie_name and val:
                    session = val.decode("latin-1")
    return ("session", session) if session else None


def user_for_token(raw: str, scopes: list[str]):
    """The active user of a valid API token that has `scopes` (None otherwise); one query, and
    the token's last use recorded as the API records it."""
    from oauth2_provider.models import AccessToken

    from portal.services.tokens import mark_used

    checksum = hashlib.sha256(raw.encode()).hexdigest()
    token = AccessToken.objects.select_related("user").filter(token_checksum=checksum).first()
    if token is None or not token.is_valid(scopes) or not token.user.is_active:
        return None
    mark_used(token)
    return token.user


def user_for_session(session_key: str):
    """The signed-in active user of a session (None otherwise), its auth hash checked as Django does."""
    from django.contrib.auth import get_user

    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(SimpleNamespace(session=store))
    return user if user.is_authenticated and user.is_active else None


CACHE_LIMIT = 10_000


def remember(cache: dict, key, value) -> None:
    """Set `cache[key]`, clearing the dict when it is full: a crude bound is enough for entries
    that live seconds."""
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    cache[key] = value


class ShortCache:
    """Values kept `seconds()` seconds (read from the settings at each use), loaded on a miss."""

    def __init__(self, seconds: Callable[[], float]):
        self.seconds = seconds
        self._entries: dict = {}

    def clear(self) -> None:
        self._entries.clear()

    def forget(self, key) -> None:
        self._entries.pop(key, None)

    async def get(self, key, load: Callable[[], Awaitable]):
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry[1] < self.seconds():
            return entry[0]
        value = await load()
        remember(self._entries, key, (value, time.monotonic()))
        return value
