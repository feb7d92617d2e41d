"""Who holds a dataset's key: grants, wrapping the data key for a user's keys, sharing, revoking."""

from __future__ import annotations

from django.db import transaction

from portal.services.audit import record_audit_event
from storage import crypto
from storage.models import Dataset, Grant, GrantLevel, KeyWrap, RootKey, UserKey
from storage.services.errors import KeyMismatchError, NoAccessError, StorageError
from storage.services.keys import public_key_of


def grant_of(user, dataset: Dataset) -> Grant | None:
    """`user`'s grant on `dataset` (admins too need one to read data)."""
    if user is None or not user.is_authenticated:
        return None
    return Grant.objects.filter(dataset=dataset, user=user).first()


def require_grant(user, dataset: Dataset, level: str = GrantLevel.READ) -> Grant:
    grant = grant_of(user, dataset)
    if grant is None or (level == GrantLevel.WRITE and grant.level != GrantLevel.WRITE):
        needed = "write access" if level == GrantLevel.WRITE else "access"
        raise NoAccessError(
            f"You have no {needed} to the data of {dataset.mnemonic}; ask its owner to share it."
        )
    return grant


def check_key(dataset: Dataset, key: bytes) -> None:
    """Refuse a data key that is not the dataset's (compared by fingerprint)."""
    if len(key) != crypto.DATA_KEY_BYTES or crypto.key_fingerprint(key) != dataset.key_fingerprint:
        raise KeyMismatchError("This is not the key of this dataset (its fingerprint differs).")


def decode_key(text) -> bytes:
    """A data key as sent by a client: base64 (standard or URL-safe) or hex of 32 bytes."""
    import base64
    import binascii

    if not isinstance(text, str) or not text.strip():
        raise StorageError("Send the dataset's key (base64 of 32 bytes).", code="key_required")
    text = text.strip()
    try:
        if len(text) == 64:
            key = bytes.fromhex(text)
        else:
            key = base64.b64decode(
                text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True
            )
    except (ValueError, binascii.Error):
        raise StorageError("The key is not valid base64 or hex.", code="invalid_key") from None
    if len(key) != crypto.DATA_KEY_BYTES:
        raise StorageError(
            f"A dataset key is {crypto.DATA_KEY_BYTES} bytes, not {len(key)}.", code="invalid_key"
        )
    return key


def _wrap_for(dataset: Dataset, holders, field: str, key: bytes, generation: int | None) -> int:
    """Wrap `key` for each of `holders` (user or root keys, `field` names which) lacking a wrap."""
    made = 0
    for holder in holders:
        _, created = KeyWrap.objects.get_or_create(
            dataset=dataset,
            generation=generation or dataset.generation,
            **{field: holder},
            defaults={"wrapped": crypto.wrap_key(public_key_of(holder), key)},
        )
        made += created
    return made


def wrap_for_user(dataset: Dataset, user, key: bytes, generation: int | None = None) -> int:
    """Wrap the data key for each active key of `user` that has no wrap yet; returns how many."""
    return _wrap_for(dataset, UserKey.objects.filter(user=user).active(), "user_key", key, generation)


def wrap_for_root_keys(dataset: Dataset, key: bytes, generation: int | None = None) -> int:
    """Wrap the data key for each active root key that has no wrap yet; returns how many."""
    return _wrap_for(dataset, RootKey.objects.active(), "root_key", key, generation)


def wraps_for(user, dataset: Dataset) -> list[KeyWrap]:
    """The wraps of the current generation that `user`'s own keys can open."""
    return list(
        KeyWrap.objects.filter(dataset=dataset, generation=dataset.generation, user_key__user=user)
        .select_related("user_key")
        .order_by("id")
    )


def share_dataset(dataset: Dataset, *, actor, recipient, level: str, key: bytes, request=None) -> Grant:
    """Grant `recipient` read or write, wrapping the key (unwrapped by the granting client) for
    every active key of theirs. A wrong key is refused (403, audited) and nothing is stored."""
    require_grant(actor, dataset, GrantLevel.WRITE)
    if level not in GrantLevel.values:
        raise StorageError(f"The level is one of {', '.join(GrantLevel.values)}.", code="invalid")
    try:
        check_key(dataset, key)
    except KeyMismatchError:
        record_audit_event(
            "storage.share_refused",
            actor=actor,
            request=request,
            obj=dataset,
            recipient=recipient.pk,
            reason="wrong key",
        )
        raise
    with transaction.atomic():
        # Locked, so that a re-key cannot switch the key between this check and the new wraps.
        dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
        check_key(dataset, key)
        return _grant(dataset, actor=actor, recipient=recipient, level=level, key=key, request=request)


def _grant(dataset: Dataset, *, actor, recipient, level: str, key: bytes, request=None) -> Grant:
    if not UserKey.objects.filter(user=recipient).active().exists():
        raise StorageError(
            f"{recipient.username} has no active key yet: they must register one before data can be shared.",
            code="recipient_has_no_key",
        )
    grant, created = Grant.objects.update_or_create(
        dataset=dataset, user=recipient, defaults={"level": level, "granted_by": actor}
    )
    wrapped = wrap_for_user(dataset, recipient, key)
    record_audit_event(
        "storage.grant_added" if created else "storage.grant_changed",
        actor=actor,
        request=request,
        obj=dataset,
        recipient=recipient.pk,
        level=level,
        wraps=wrapped,
    )
    return grant


@transaction.atomic
def revoke_grant(dataset: Dataset, *, actor, recipient, request=None) -> int:
    """Remove `recipient`'s grant and wraps. Returns the wraps removed. Re-keying afterwards also
    shuts out a copy of the key they may have kept."""
    require_grant(actor, dataset, GrantLevel.WRITE)
    grant = Grant.objects.filter(dataset=dataset, user=recipient).first()
    if grant is None:
        raise StorageError(
            f"{recipient.username} has no grant on this dataset.", code="not_found", status=404
        )
    if recipient == dataset.owner:
        raise StorageError("The owner's access cannot be revoked.", code="owner")
    removed, _ = KeyWrap.objects.filter(dataset=dataset, user_key__user=recipient).delete()
    grant.delete()
    record_audit_event(
        "storage.grant_revoked",
        actor=actor,
        request=request,
        obj=dataset,
        recipient=recipient.pk,
        wraps=removed,
    )
    return removed
