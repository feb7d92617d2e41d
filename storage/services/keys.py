"""Registering, activating and revoking users' public keys; the operator's root keys."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.services.audit import record_audit_event
from storage import crypto
from storage.models import KeyState, KeyWrap, RootKey, UserKey
from storage.services.errors import ConflictError, StorageError


def parse_public_key(text) -> tuple[str, str]:
    """PEM (or ssh-rsa, or JWK) text → (PEM, fingerprint); a clear error for anything else."""
    try:
        key = crypto.load_public_key(text)
    except (crypto.CryptoError, ValueError, TypeError) as exc:
        raise StorageError(f"Not a usable public key: {exc}", code="invalid_key") from None
    return crypto.public_key_pem(key), crypto.public_key_fingerprint(key)


def register_user_key(user, name: str, public_key, *, request=None) -> UserKey:
    """Register `user`'s public key; active at once unless keys need an admin's activation."""
    pem, fingerprint = parse_public_key(public_key)
    if UserKey.objects.filter(user=user, fingerprint=fingerprint).exists():
        raise ConflictError("You registered this key already.")
    needs_activation = settings.STORAGE_KEYS_NEED_ACTIVATION and not user.is_staff
    key = UserKey.objects.create(
        user=user,
        name=name.strip() or "key",
        public_key=pem,
        fingerprint=fingerprint,
        state=KeyState.PENDING if needs_activation else KeyState.ACTIVE,
        activated_at=None if needs_activation else timezone.now(),
    )
    record_audit_event(
        "storage.key_registered",
        actor=user,
        request=request,
        obj=key,
        fingerprint=fingerprint,
        state=key.state,
    )
    return key


def activate_user_key(key: UserKey, *, actor, request=None) -> UserKey:
    if key.state != KeyState.PENDING:
        raise ConflictError(f"This key is {key.get_state_display().lower()}, not waiting for activation.")
    key.state, key.activated_at, key.activated_by = KeyState.ACTIVE, timezone.now(), actor
    key.save(update_fields=["state", "activated_at", "activated_by"])
    record_audit_event("storage.key_activated", actor=actor, request=request, obj=key, owner=key.user_id)
    return key


@transaction.atomic
def revoke_user_key(key: UserKey, *, actor, request=None) -> int:
    """Revoke a key: it gets no new wraps and loses the ones it had. Returns how many were removed."""
    if key.state == KeyState.REVOKED:
        raise ConflictError("This key is revoked already.")
    removed, _ = KeyWrap.objects.filter(user_key=key).delete()
    key.state, key.revoked_at = KeyState.REVOKED, timezone.now()
    key.save(update_fields=["state", "revoked_at"])
    record_audit_event("storage.key_revoked", actor=actor, request=request, obj=key, wraps_removed=removed)
    return removed


def add_root_key(name: str, public_key, *, actor=None) -> RootKey:
    """Register an operator's root key; datasets created from now on are wrapped for it too."""
    pem, fingerprint = parse_public_key(public_key)
    if RootKey.objects.filter(fingerprint=fingerprint).exists():
        raise ConflictError("This root key is registered already.")
    key = RootKey.objects.create(name=name, public_key=pem, fingerprint=fingerprint)
    record_audit_event("storage.root_key_added", actor=actor, obj=key, fingerprint=fingerprint)
    return key


def public_key_of(key: UserKey | RootKey):
    return crypto.load_public_key(key.public_key)
