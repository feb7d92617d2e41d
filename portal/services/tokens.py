"""Personal API tokens: creation (secret shown once), revocation, scope checks."""

from __future__ import annotations

import datetime as dt
import secrets
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import AccessToken, set_token_value

from portal.models import ApiToken
from portal.services.audit import record_audit_event

TOKEN_PREFIX = "rdp_"  # noqa: S105 - a public prefix that makes leaked tokens greppable


class TokenError(ValueError):
    """Invalid token request; the message is for the user."""


def allowed_scopes(user) -> list[str]:
    scopes = list(settings.PORTAL_TOKEN_SCOPES)
    if not user.is_staff:
        scopes.remove("admin")
    return scopes


@transaction.atomic
def create_api_token(
    user, *, name: str, scopes: list[str], expires_at: dt.datetime, request=None,
    granting_scopes: list[str] | None = None,
) -> tuple[ApiToken, str]:
    """Create a token and return it with its secret, which is never retrievable again.

    `granting_scopes` are the scopes of the token used to make this request, if any: a token can
    only create tokens with no more rights than itself.
    """
    name = (name or "").strip()
    if not name:
        raise TokenError("Give the token a name, so you can recognise it later.")
    scopes = sorted(set(scopes))
    if not scopes:
        raise TokenError("Choose at least one scope.")
    unknown = set(scopes) - set(settings.PORTAL_TOKEN_SCOPES)
    if unknown:
        raise TokenError(f"Unknown scope(s): {', '.join(sorted(unknown))}.")
    if set(scopes) - set(allowed_scopes(user)):
        raise TokenError("Only staff can create tokens with the admin scope.")
    if granting_scopes is not None and set(scopes) - set(granting_scopes):
        raise TokenError("A token can only create tokens with scopes it has itself.")
    now = timezone.now()
    if expires_at <= now:
        raise TokenError("The expiry must be in the future.")
    if expires_at > now + dt.timedelta(days=settings.PORTAL_TOKEN_MAX_DAYS):
        raise TokenError(f"Tokens expire after at most {settings.PORTAL_TOKEN_MAX_DAYS} days.")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    access = AccessToken(user=user, scope=" ".join(scopes), expires=expires_at, application=None)
    set_token_value(access, secret)
    access.save()
    token = ApiToken.objects.create(
        user=user, name=name[:100], scopes=" ".join(scopes), access_token=access,
        hint=secret[-4:], expires_at=expires_at,
    )
    record_audit_event("token.created", actor=user, request=request, obj=token,
                       scopes=scopes, expires_at=expires_at.isoformat())
    return token, secret


@transaction.atomic
def revoke_api_token(token: ApiToken, *, actor, request=None) -> ApiToken:
    """Stop a token working at once; the record stays for the audit trail."""
    if token.revoked_at is not None:
        raise TokenError("This token is already revoked.")
    if token.access_token_id:
        AccessToken.objects.filter(pk=token.access_token_id).delete()
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at"])
    record_audit_event("token.revoked", actor=actor, request=request, obj=token)
    return token


def token_scopes(auth) -> list[str] | None:
    """Scopes of the request's token, or None for a session (which has every right)."""
    scope = getattr(auth, "scope", None)
    if scope is None:
        return None
    return scope.split()


# When this process last recorded each access token's use: a busy client (an upload sends a
# request per chunk) then costs one UPDATE a minute, not one query per request.
_marked: dict[int, float] = {}


def mark_used(access_token) -> None:
    """Remember when a personal token was last used (at most once a minute per token)."""
    now = time.monotonic()
    if now - _marked.get(access_token.pk, -3600.0) < 60:
        return
    if len(_marked) > 10_000:
        _marked.clear()
    _marked[access_token.pk] = now
    cutoff = timezone.now() - dt.timedelta(minutes=1)
    ApiToken.objects.filter(access_token=access_token).exclude(last_used_at__gt=cutoff).update(
        last_used_at=timezone.now()
    )
