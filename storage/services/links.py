"""Upload links: a secret that lets someone without an account upload data for the link's owner.

The secret is shown once, when the link is made; only its SHA-256 is stored (like personal API
tokens). A presented secret is found by its hash and refused when unknown (401), expired or
revoked (403). The link can only start uploads and go on with the uploads started through it:
the data is encrypted under a fresh data key wrapped for the owner's keys and the root keys, and
the uploader never learns anything about the owner's other data. Limits (bytes announced at the
start, datasets started) are checked and counted under a row lock, so parallel starts cannot
overshoot them. Every use is audited.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from portal.services.audit import record_audit_event
from storage.models import Dataset, DatasetState, UploadLink, UserKey
from storage.services import uploads
from storage.services.errors import ConflictError, KeyNeededError, StorageError

LINK_TOKEN_PREFIX = "rdu_"  # noqa: S105 - a public prefix that makes leaked links greppable
PREFIX_LENGTH = 12
LABEL_MAX = 200


class LinkRefusedError(StorageError):
    """The presented upload link is unknown (401), expired or revoked (403)."""

    status = 403
    code = "link_refused"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def link_state(link: UploadLink, now: dt.datetime | None = None) -> str:
    """`active`, `expired` or `revoked` (revoked wins: it was a deliberate act)."""
    if link.revoked_at is not None:
        return "revoked"
    if link.expires_at <= (now or timezone.now()):
        return "expired"
    return "active"


def remaining(link: UploadLink) -> dict[str, int | None]:
    """What the link may still take: bytes and files (None: no limit)."""
    return {
        "bytes": None if link.max_bytes is None else max(0, link.max_bytes - link.used_bytes),
        "files": None if link.max_files is None else max(0, link.max_files - link.used_files),
    }


def _positive_or_none(value, what: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StorageError(
            f"The {what} is a whole number of at least 1, or empty for no limit.", code="invalid"
        )
    return value


@transaction.atomic
def create_link(
    owner,
    *,
    label: str,
    expires_at: dt.datetime,
    max_bytes: int | None = None,
    max_files: int | None = None,
    request=None,
) -> tuple[UploadLink, str]:
    """Make an upload link for `owner`; returns it with its secret, which is never shown again."""
    label = (label or "").strip()
    if not label:
        raise StorageError("Give the link a label, so you recognise its uploads later.", code="invalid")
    if len(label) > LABEL_MAX:
        raise StorageError(f"The label is at most {LABEL_MAX} characters.", code="invalid")
    if not isinstance(expires_at, dt.datetime):
        raise StorageError("The expiry is a date and time.", code="invalid")
    if timezone.is_naive(expires_at):
        expires_at = timezone.make_aware(expires_at)
    now = timezone.now()
    if expires_at <= now:
        raise StorageError("The expiry must be in the future.", code="invalid")
    if expires_at > now + dt.timedelta(days=settings.PORTAL_TOKEN_MAX_DAYS):
        raise StorageError(
            f"Upload links expire after at most {settings.PORTAL_TOKEN_MAX_DAYS} days.", code="invalid"
        )
    max_bytes = _positive_or_none(max_bytes, "size limit")
    max_files = _positive_or_none(max_files, "file limit")
    if not UserKey.objects.filter(user=owner).active().exists():
        raise StorageError(
            "Register a key (Keys page) and have it activated first: uploads through the link are "
            "encrypted for your keys.",
            code="no_active_key",
        )
    token = LINK_TOKEN_PREFIX + secrets.token_urlsafe(32)
    link = UploadLink.objects.create(
        owner=owner,
        label=label,
        token_hash=hash_token(token),
        prefix=token[:PREFIX_LENGTH],
        expires_at=expires_at,
        max_bytes=max_bytes,
        max_files=max_files,
    )
    record_audit_event(
        "storage.upload_link_created",
        actor=owner,
        request=request,
        obj=link,
        expires_at=expires_at.isoformat(),
        max_bytes=max_bytes,
        max_files=max_files,
    )
    return link, token


@transaction.atomic
def revoke_link(link: UploadLink, *, actor, request=None) -> UploadLink:
    """Stop a link at once (uploads in flight through it stop too); the record stays."""
    link = UploadLink.objects.select_for_update().get(pk=link.pk)
    if link.revoked_at is not None:
        raise ConflictError("This upload link is revoked already.", code="already_revoked")
    link.revoked_at = timezone.now()
    link.save(update_fields=["revoked_at"])
    record_audit_event("storage.upload_link_revoked", actor=actor, request=request, obj=link)
    return link


def refusal(link: UploadLink) -> LinkRefusedError | None:
    """Why `link` may not be used now, as the error to raise; None when it may."""
    state = link_state(link)
    if state == "revoked":
        return LinkRefusedError(
            "This upload link was revoked by its owner; ask them for a new one.", code="link_revoked"
        )
    if state == "expired":
        return LinkRefusedError(
            f"This upload link expired on {link.expires_at:%Y-%m-%d %H:%M} UTC; ask its owner for a new one.",
            code="link_expired",
        )
    return None


def authenticate_link(token, *, request=None, operation: str = "") -> UploadLink:
    """The link a presented secret opens; a refusal (audited) for unknown, expired or revoked ones."""
    if not isinstance(token, str) or not token.strip():
        raise LinkRefusedError(
            "Send the upload link's secret (the last part of the link) in the X-Upload-Token header.",
            code="link_missing",
            status=401,
        )
    token = token.strip()
    link = UploadLink.objects.select_related("owner").filter(token_hash=hash_token(token)).first()
    if link is None:
        record_audit_event(
            "storage.upload_link_refused",
            request=request,
            object_type="storage.uploadlink",
            reason="unknown",
            operation=operation,
            prefix=token[:PREFIX_LENGTH] if token.startswith(LINK_TOKEN_PREFIX) else "",
        )
        raise LinkRefusedError(
            "This upload link is not valid; check that you copied the whole link.",
            code="link_unknown",
            status=401,
        )
    error = refusal(link)
    if error is not None:
        record_audit_event(
            "storage.upload_link_refused",
            request=request,
            obj=link,
            reason=error.code,
            operation=operation,
        )
        raise error
    return link


def record_use(link: UploadLink, operation: str, *, request=None, dataset: Dataset | None = None, **details):
    """Audit one use of the link and remember when it was last used."""
    UploadLink.objects.filter(pk=link.pk).update(last_used_at=timezone.now())
    record_audit_event(
        "storage.upload_link_used",
        request=request,
        obj=link,
        operation=operation,
        dataset=dataset.mnemonic if dataset is not None else None,
        **details,
    )


# --- uploads through a link -------------------------------------------------------------------------

_SIGNING_SALT = "storage.upload-link.upload"


def upload_handle(link: UploadLink, dataset: Dataset) -> str:
    """The id the uploader uses for a dataset it started: the mnemonic signed for this link, so
    that nobody holding the same link can guess their way into someone else's upload."""
    return signing.Signer(salt=f"{_SIGNING_SALT}.{link.pk}", sep=".").sign(dataset.mnemonic)


def dataset_of(link: UploadLink, handle) -> Dataset:
    """The unfinished dataset that `handle` names, started through `link`; 404 for anything else."""
    missing = StorageError(
        "No upload in progress with this id through this link (it was finished, removed, or never "
        "started here); start the file again.",
        code="not_found",
        status=404,
    )
    if not isinstance(handle, str) or len(handle) > 200:
        raise missing
    try:
        mnemonic = signing.Signer(salt=f"{_SIGNING_SALT}.{link.pk}", sep=".").unsign(handle)
    except signing.BadSignature:
        raise missing from None
    dataset = Dataset.objects.filter(
        mnemonic=mnemonic, upload_link=link, state=DatasetState.UPLOADING
    ).first()
    if dataset is None:
        raise missing
    return dataset


def start_link_upload(
    link: UploadLink,
    *,
    name: str,
    file_name: str,
    size: int,
    chunk_size: int | None = None,
    first_chunk_sha256: str = "",
    description: str = "",
    request=None,
) -> Dataset:
    """Start an upload for the link's owner, counting it against the link's limits atomically.

    Duplicates among the owner's data are not looked up: the uploader must learn nothing of it.
    """
    with transaction.atomic():
        locked = UploadLink.objects.select_for_update().select_related("owner").get(pk=link.pk)
        error = refusal(locked)
        if error is not None:
            raise error
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise StorageError("The size is a whole number of bytes, 0 or more.", code="invalid")
        if locked.max_files is not None and locked.used_files + 1 > locked.max_files:
            raise StorageError(
                f"This link takes at most {locked.max_files} file(s), and all were sent; ask its "
                "owner for a new link.",
                code="link_file_limit",
                status=403,
            )
        if locked.max_bytes is not None and locked.used_bytes + size > locked.max_bytes:
            left = max(0, locked.max_bytes - locked.used_bytes)
            raise StorageError(
                f"This file ({size:,} bytes) is larger than what this link still takes ({left:,} of "
                f"{locked.max_bytes:,} bytes).",
                code="link_size_limit",
                status=413,
            )
        if not UserKey.objects.filter(user=locked.owner).active().exists():
            raise StorageError(
                "The owner of this link has no active key, so nothing can be encrypted for them; "
                "ask them to register one.",
                code="owner_has_no_key",
                status=409,
            )
        dataset = uploads.start_upload(
            owner=locked.owner,
            uploaded_by=None,
            upload_link=locked,
            name=name,
            file_name=file_name,
            size=size,
            chunk_size=chunk_size,
            first_chunk_sha256=first_chunk_sha256,
            description=description,
            request=request,
        )
        UploadLink.objects.filter(pk=locked.pk).update(
            used_files=F("used_files") + 1, used_bytes=F("used_bytes") + size
        )
        record_use(locked, "start", request=request, dataset=dataset, size=size)
    return dataset


def _no_key_for_uploader(exc: KeyNeededError) -> StorageError:
    return StorageError(
        "This upload waited too long and the server no longer holds its key; start the file again.",
        code="upload_stale",
        status=409,
    )


def put_link_chunk(link: UploadLink, dataset: Dataset, index: int, data: bytes, sha256, *, request=None):
    """Store one chunk of an upload started through `link` (audited, with its index)."""
    try:
        chunk = uploads.put_chunk(dataset, index, data, sha256)
    except KeyNeededError as exc:
        raise _no_key_for_uploader(exc) from None
    record_use(link, "chunk", request=request, dataset=dataset, index=index)
    return chunk


def finish_link_upload(link: UploadLink, dataset: Dataset, *, request=None) -> Dataset:
    """Complete an upload started through `link`: the owner can read it from now on."""
    try:
        dataset = uploads.finish_upload(dataset, request=request)
    except KeyNeededError as exc:
        raise _no_key_for_uploader(exc) from None
    record_use(link, "finish", request=request, dataset=dataset, sha256=dataset.sha256)
    return dataset
