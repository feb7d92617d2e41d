"""Websocket authentication by session cookie or personal API token.

Browsers authenticate with their session cookie; other clients send `Authorization: Bearer
<token>` (never in the URL, where proxies would log it). Tokens need the `read` scope.
"""

from __future__ import annotations

import hashlib

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware


@database_sync_to_async
def user_for_token(raw: str):
    from oauth2_provider.models import AccessToken

    checksum = hashlib.sha256(raw.encode()).hexdigest()
    token = AccessToken.objects.select_related("user").filter(token_checksum=checksum).first()
    if token is None or not token.is_valid(["read"]) or not token.user.is_active:
        return None, ()
    return token.user, tuple(token.scope.split())


class TokenAuthMiddleware(BaseMiddleware):
    """Sets scope["user"] from a bearer token when one is sent; else leaves the session user.

    `scope["token_scopes"]` holds the token's scopes (None for a session): consumers that change
    data check it for "write".
    """

    async def __call__(self, scope, receive, send):
        raw = None
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.lower().startswith(b"bearer "):
                raw = value[7:].decode("latin-1").strip()
        if raw:
            from django.contrib.auth.models import AnonymousUser

            user, scopes = await user_for_token(raw)
            scope = dict(scope, user=user or AnonymousUser(), token_scopes=scopes)
        return await super().__call__(scope, receive, send)


def PortalAuthMiddlewareStack(inner):  # noqa: N802 - named like Channels' own stacks
    return AuthMiddlewareStack(TokenAuthMiddleware(inner))


class PortalOriginValidator:
    """Browsers must come from an allowed host; token clients (no cookies, no Origin) may connect.

    A missing Origin header is normal for scripts and is harmless for them, because a bearer
    token is not sent automatically the way a session cookie is; a cookie-only request without
    Origin is refused, as is any request from a foreign Origin.
    """

    def __init__(self, app):
        from channels.security.websocket import AllowedHostsOriginValidator

        self.app = app
        self.browser_check = AllowedHostsOriginValidator(app)

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", []))
        if b"origin" not in headers and b"authorization" in headers:
            return await self.app(scope, receive, send)
        return await self.browser_check(scope, receive, send)
