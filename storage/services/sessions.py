"""Plain chunked upload sessions (see `storage.models.uploads`): start, chunks, finish, cancel,
and handing the finished file over to the app it was meant for.

Apps declare what they take (`register_upload_purpose("slide", "whole-slide image")` in their
AppConfig.ready); a session names its purpose when it starts, and only that app takes its file.
Chunks may arrive in any order and side by side; each is written at its place in one
preallocated file. Finishing re-reads the file, checks every chunk against its hash once more
and computes the whole file's SHA-256.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from portal.services.audit import record_audit_event
from storage.models import UploadChunk, UploadSession, UploadState
from storage.services.errors import ConflictError, StorageError
from storage.services.uploads import check_hash, verify_chunk

MIN_CHUNK = 64 * 1024
_purposes: dict[str, str] = {}


def register_upload_purpose(name: str, label: str) -> None:
    """Let sessions be started for `name` (an app takes their files)."""
    _purposes[name] = label


def upload_purposes() -> dict[str, str]:
    return dict(_purposes)


def start_session(
    *, owner, file_name: str, size, purpose: str, chunk_size=None, sha256: str | None = None
) -> UploadSession:
    """A new session for a file of `size` bytes; its space is reserved on disk."""
    if purpose not in _purposes:
        known = ", ".join(sorted(_purposes)) or "none"
        raise StorageError(
            f"Unknown purpose {purpose!r}; uploads are taken for: {known}.", code="invalid_purpose"
        )
    name = Path(str(file_name or "")).name.strip()
    if not name or len(name) > 255 or name in (".", "..") or not name.isprintable():
        raise StorageError(
            "A file name (1 to 255 printable characters, not . or ..) is needed.", code="invalid_name"
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise StorageError(
            "The size is a whole number of bytes, at least 1 (empty files are not taken).",
            code="invalid_size",
        )
    if size > settings.STORAGE_MAX_DATASET_SIZE:
        raise StorageError(
            f"Files are at most {settings.STORAGE_MAX_DATASET_SIZE:,} bytes.", code="too_large", status=413
        )
    chunk_size = settings.STORAGE_CHUNK_SIZE if chunk_size is None else chunk_size
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or not MIN_CHUNK <= chunk_size <= settings.STORAGE_MAX_CHUNK_SIZE
    ):
        raise StorageError(
            f"The chunk size is from {MIN_CHUNK:,} to {settings.STORAGE_MAX_CHUNK_SIZE:,} bytes.",
            code="invalid_chunk_size",
        )
    expected = check_hash(sha256, "file's SHA-256") if sha256 else ""
    session = UploadSession.objects.create(
        owner=owner,
        purpose=purpose,
        file_name=name,
        size=size,
        chunk_size=chunk_size,
        expected_sha256=expected,
        expires_at=timezone.now() + dt.timedelta(days=settings.STORAGE_UPLOAD_SESSION_DAYS),
    )
    session.path.parent.mkdir(parents=True, exist_ok=True)
    with open(session.path, "wb") as handle:
        handle.truncate(size)  # sparse: the blocks are taken as chunks arrive
    return session


def _require_receiving(session: UploadSession) -> None:
    if session.state != UploadState.RECEIVING:
        raise ConflictError(f"This upload is {session.get_state_display().lower()}; it takes no more chunks.")


def put_chunk(session: UploadSession, index, data: bytes, sha256) -> UploadChunk:
    """Check a chunk and write it at its place; sending a chunk again replaces it."""
    _require_receiving(session)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < session.chunk_count:
        raise StorageError(f"The chunk index is from 0 to {session.chunk_count - 1}.", code="invalid_index")
    digest = verify_chunk(index, data, sha256, session.chunk_length(index)).hex()
    with transaction.atomic():
        with connection.cursor() as cursor:  # finishing (FOR UPDATE) waits for chunks in flight
            cursor.execute("SELECT state FROM storage_uploadsession WHERE id = %s FOR SHARE", [session.pk])
            (state,) = cursor.fetchone()
        if state != UploadState.RECEIVING:
            raise ConflictError("This upload takes no more chunks.")
        fd = os.open(session.path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, index * session.chunk_size)
        finally:
            os.close(fd)
        chunk = UploadChunk(session=session, index=index, size=len(data), sha256=digest)
        UploadChunk.objects.bulk_create(
            [chunk],
            update_conflicts=True,
            unique_fields=["session", "index"],
            update_fields=["size", "sha256"],
        )
        UploadSession.objects.filter(pk=session.pk).update(updated_at=timezone.now())
    return chunk


def missing_chunks(session: UploadSession) -> list[int]:
    have = set(session.chunks.values_list("index", flat=True))
    return [i for i in range(session.chunk_count) if i not in have]


def finish_session(session: UploadSession) -> UploadSession:
    """All chunks there: flush the file, check it once more and compute its SHA-256."""
    with transaction.atomic():
        session = UploadSession.objects.select_for_update().get(pk=session.pk)
        if session.state == UploadState.COMPLETE:
            return session
        _require_receiving(session)
        missing = missing_chunks(session)
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (" …" if len(missing) > 20 else "")
            raise ConflictError(f"{len(missing)} chunk(s) are missing: {shown}.", code="chunks_missing")
        hashes = dict(session.chunks.values_list("index", "sha256"))
        whole = hashlib.sha256()
        damaged = []
        with open(session.path, "rb") as handle:
            os.fsync(handle.fileno())
            for index in range(session.chunk_count):
                data = handle.read(session.chunk_length(index))
                whole.update(data)
                if hashlib.sha256(data).hexdigest() != hashes[index]:
                    damaged.append(index)
        if damaged:
            session.chunks.filter(index__in=damaged).delete()
            raise ConflictError(
                f"Chunk(s) {', '.join(map(str, damaged[:20]))} no longer match their hash on disk; "
                "send them again.",
                code="chunks_missing",
            )
        digest = whole.hexdigest()
        if session.expected_sha256 and digest != session.expected_sha256:
            raise StorageError(
                f"The file's SHA-256 is {digest}, not the {session.expected_sha256} announced: the "
                "local file changed during the upload? Cancel this upload and send the file again.",
                code="hash_mismatch",
                status=409,
            )
        session.sha256, session.state, session.completed_at = digest, UploadState.COMPLETE, timezone.now()
        session.save(update_fields=["sha256", "state", "completed_at", "updated_at"])
    return session


def cancel_session(session: UploadSession) -> None:
    if session.state == UploadState.USED:
        raise ConflictError("This upload's file was taken over already; there is nothing to cancel.")
    UploadSession.objects.filter(pk=session.pk).update(state=UploadState.CANCELLED, updated_at=timezone.now())
    shutil.rmtree(session.path.parent, ignore_errors=True)


def take_file(session_id, *, user, purpose: str, destination: Path, used_by: str) -> UploadSession:
    """Move a complete session's file to `destination` for the app that asked; the session is spent."""
    with transaction.atomic():
        session = (
            UploadSession.objects.select_for_update().filter(pk=session_id, owner=user).first()
            if isinstance(session_id, int) and not isinstance(session_id, bool)
            else None
        )
        if session is None:
            raise StorageError("No such upload of yours.", code="not_found", status=404)
        if session.purpose != purpose:
            raise StorageError(
                f"This upload was started for {session.purpose!r}, not {purpose!r}.", code="wrong_purpose"
            )
        if session.state == UploadState.RECEIVING:
            raise ConflictError("This upload is not finished yet.", code="not_finished")
        if session.state != UploadState.COMPLETE:
            raise ConflictError(f"This upload is {session.get_state_display().lower()}.")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(session.path), destination)
        session.state, session.used_by = UploadState.USED, used_by[:100]
        session.save(update_fields=["state", "used_by", "updated_at"])
    shutil.rmtree(session.path.parent, ignore_errors=True)
    record_audit_event("storage.upload_taken", actor=user, obj=session, used_by=used_by)
    return session


def purge_expired_sessions() -> int:
    """Unfinished or unused sessions past their expiry are cancelled and their files removed."""
    expired = UploadSession.objects.filter(
        state__in=[UploadState.RECEIVING, UploadState.COMPLETE], expires_at__lt=timezone.now()
    )
    count = 0
    for session in expired:
        cancel_session(session)
        count += 1
    return count
