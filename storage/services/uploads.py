"""Chunked, resumable, encrypted uploads: start, put chunks, resume, finish.

The server makes each dataset's random data key at the start, wraps it for the owner's active
keys and every active root key, and keeps it for the rest of the upload only sealed under the
server secret (`Dataset.sealed_key`, until `sealed_until`). Each chunk arrives with its SHA-256,
is checked, encrypted with AES-256-GCM (fresh nonce; dataset id and index as associated data)
and written; only ciphertext reaches the disk. After the seal expires, a key holder goes on by
supplying the key (checked by fingerprint), which seals it again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from portal.services.audit import record_audit_event
from storage import crypto
from storage.mnemonics import new_mnemonic
from storage.models import Chunk, Dataset, DatasetState, Grant, GrantLevel, UserKey
from storage.recovery import ChunkRecord, build_recovery_document, chunk_file_name, write_recovery_file
from storage.services import chunkstore
from storage.services.access import check_key, wrap_for_root_keys, wrap_for_user
from storage.services.errors import ConflictError, KeyNeededError, NoAccessError, StorageError

HEX64 = re.compile(r"^[0-9a-f]{64}$")
MIN_CHUNK_SIZE = 64 * 1024


def _purpose(dataset: Dataset) -> str:
    return f"upload-key:{dataset.mnemonic}"


def _seal(dataset: Dataset, key: bytes) -> None:
    ttl = settings.STORAGE_UPLOAD_KEY_TTL
    dataset.sealed_key = crypto.seal(crypto.sealing_secret(), key, purpose=_purpose(dataset), ttl_seconds=ttl)
    dataset.sealed_until = timezone.now() + dt.timedelta(seconds=ttl)


def check_hash(text, what: str) -> str:
    if not isinstance(text, str) or not HEX64.match(text.strip().lower()):
        raise StorageError(f"The {what} is 64 hexadecimal digits (SHA-256).", code="invalid_hash")
    return text.strip().lower()


def verify_chunk(index: int, data: bytes, sha256, length: int) -> bytes:
    """A chunk's SHA-256 digest, once its size and the hash the client sent are right (the
    checks every chunked upload makes, encrypted datasets and plain sessions alike)."""
    expected = check_hash(sha256, "chunk's SHA-256")
    if len(data) != length:
        raise StorageError(
            f"Chunk {index} must be {length:,} bytes, not {len(data):,}; nothing was stored.",
            code="wrong_size",
        )
    digest = hashlib.sha256(data).digest()
    if digest.hex() != expected:
        raise StorageError(
            f"Chunk {index} does not match its SHA-256 (it was damaged on the way); nothing was stored.",
            code="hash_mismatch",
        )
    return digest


def duplicates_of(user, first_chunk_sha256: str) -> list[Dataset]:
    """Available datasets `user` may read whose first chunk has this SHA-256."""
    if not first_chunk_sha256:
        return []
    return list(
        Dataset.objects.for_user(user, "view")
        .filter(first_chunk_sha256=first_chunk_sha256, state=DatasetState.AVAILABLE)
        .order_by("-created_at")[:10]
    )


@transaction.atomic
def start_upload(
    *,
    owner,
    name: str,
    file_name: str,
    size: int,
    chunk_size: int | None = None,
    first_chunk_sha256: str = "",
    description: str = "",
    project=None,
    uploaded_by=None,
    upload_link=None,
    request=None,
) -> Dataset:
    """Create a dataset in the `uploading` state with a fresh data key, wrapped for the owner's
    active keys and the root keys. The owner must have an active key (else nobody could read it)."""
    chunk_size = chunk_size or settings.STORAGE_CHUNK_SIZE
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise StorageError("The size is a whole number of bytes, 0 or more.")
    if size > settings.STORAGE_MAX_DATASET_SIZE:
        raise StorageError(
            f"Datasets are at most {settings.STORAGE_MAX_DATASET_SIZE:,} bytes.", status=413, code="too_large"
        )
    if not MIN_CHUNK_SIZE <= chunk_size <= settings.STORAGE_MAX_CHUNK_SIZE:
        raise StorageError(
            f"The chunk size is between {MIN_CHUNK_SIZE:,} and {settings.STORAGE_MAX_CHUNK_SIZE:,} bytes."
        )
    if first_chunk_sha256:
        first_chunk_sha256 = check_hash(first_chunk_sha256, "first chunk's hash")
    if not UserKey.objects.filter(user=owner).active().exists():
        raise StorageError(
            "Register a key (Keys page) and have it activated before uploading: the data is encrypted "
            "for your keys.",
            code="no_active_key",
        )
    key = crypto.new_data_key()
    dataset = Dataset(
        mnemonic=new_mnemonic(lambda m: Dataset.objects.filter(mnemonic=m).exists()),
        name=name.strip() or file_name,
        file_name=file_name,
        description=description,
        project=project,
        size=size,
        chunk_size=chunk_size,
        first_chunk_sha256=first_chunk_sha256,
        key_fingerprint=crypto.key_fingerprint(key),
        owner=owner,
        uploaded_by=uploaded_by,
        upload_link=upload_link,
    )
    _seal(dataset, key)
    dataset.save()
    Grant.objects.create(dataset=dataset, user=owner, level=GrantLevel.WRITE, granted_by=uploaded_by or owner)
    wrap_for_user(dataset, owner, key)
    wrap_for_root_keys(dataset, key)
    record_audit_event(
        "storage.upload_started",
        actor=uploaded_by,
        request=request,
        obj=dataset,
        size=size,
        upload_link=upload_link.pk if upload_link else None,
    )
    return dataset


def upload_key(dataset: Dataset, supplied: bytes | None = None) -> bytes:
    """The data key for going on with an upload: the supplied one (checked, and sealed again for
    later chunks) or the sealed one; `KeyNeededError` once the seal expired."""
    if supplied is not None:
        check_key(dataset, supplied)
        if dataset.state == DatasetState.UPLOADING:  # kept again, for the chunks still to come
            _seal(dataset, supplied)
            Dataset.objects.filter(pk=dataset.pk).update(
                sealed_key=dataset.sealed_key, sealed_until=dataset.sealed_until
            )
        return supplied
    if not dataset.sealed_key:
        raise KeyNeededError("Supply the dataset's key to go on with this upload.")
    try:
        key = crypto.unseal(crypto.sealing_secret(), dataset.sealed_key, purpose=_purpose(dataset))
    except crypto.SealExpiredError:
        raise KeyNeededError(
            "This upload's key was kept for the server only until "
            f"{dataset.sealed_until:%Y-%m-%d %H:%M} UTC; supply the key (your key unwraps it) to go on."
        ) from None
    except crypto.SealError:
        raise KeyNeededError(
            "This upload's kept key cannot be opened (the server secret changed); supply the key."
        ) from None
    return key


@contextmanager
def lazy_commit() -> Iterator[None]:
    """A transaction whose commit does not wait for the database's log to reach the disk.

    For chunk rows only: a crash of the database server may lose the last such commits, which
    harms nothing – a lost chunk row makes the chunk "missing", so the upload's client sends it
    again (and a re-key run again writes it), and its file is flushed anyway only when the
    upload finishes. The commits that make data available (finishing an upload, switching a
    re-key) wait as usual, and with them every row committed before (the log is written in
    order). Saves a disk flush per chunk."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


def _require_uploading(dataset: Dataset) -> None:
    if dataset.state != DatasetState.UPLOADING:
        raise ConflictError(f"{dataset.mnemonic} is {dataset.get_state_display().lower()}, not uploading.")


def put_chunk(
    dataset: Dataset,
    index,
    data: bytes | memoryview,
    sha256,
    *,
    key: bytes | None = None,
    writer=None,
    buffers: chunkstore.ChunkBuffers | None = None,
) -> Chunk:
    """Check, encrypt and store chunk `index`; sending a chunk again replaces it. With `writer`,
    that user's write grant is checked under the same lock (the chunk path in front of Django
    relies on it). `buffers`: the calling thread's, to encrypt into without a new object per
    chunk."""
    _require_uploading(dataset)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < dataset.chunk_count:
        raise StorageError(
            f"The chunk index is between 0 and {dataset.chunk_count - 1}.", code="invalid_index"
        )
    digest = verify_chunk(index, data, sha256, dataset.chunk_length(index))
    data_key = upload_key(dataset, key)
    if buffers is None:
        nonce, ciphertext = crypto.encrypt_chunk(data_key, dataset.mnemonic, index, data)
    else:
        ciphertext = buffers.get("ciphertext", len(data) + crypto.TAG_BYTES)
        nonce = crypto.encrypt_chunk_into(data_key, dataset.mnemonic, index, data, ciphertext)
    chunk = Chunk(
        dataset=dataset,
        generation=dataset.generation,
        index=index,
        size=len(data),
        stored_size=len(ciphertext),
        nonce=nonce,
        sha256=digest.hex(),
    )
    # Two queries, one round trip each: the transaction begun, the dataset locked and the grant
    # checked; then (once the file is in place) the row written and the transaction committed.
    # A share lock: chunks arrive side by side, but finishing (FOR UPDATE) waits for those in
    # flight, and a chunk arriving after the finish is refused. The commit does not wait for the
    # database's log to be flushed (see `lazy_commit`).
    connection.ensure_connection()
    raw = connection.connection
    begin, commit, rollback = _chunk_transaction(raw)
    with raw.cursor() as cursor:
        try:
            cursor.execute(
                f"{begin}; {_LOCK_FOR_CHUNK}",
                [writer.pk if writer is not None else None, GrantLevel.WRITE, dataset.pk],
            )
            cursor.nextset()
            row = cursor.fetchone()
            if row is None:
                raise StorageError(f"{dataset.mnemonic} no longer exists.", code="not_found", status=404)
            _, state, may_write = row
            if writer is not None and not may_write:
                raise NoAccessError(
                    f"You have no write access to the data of {dataset.mnemonic}; ask its owner to share it."
                )
            if state != DatasetState.UPLOADING:
                raise ConflictError(f"{dataset.mnemonic} is not uploading any more.")
            # Flushed to disk at finish, all at once (`finish_upload` checks and syncs every file).
            chunkstore.write_chunk(dataset, index, ciphertext, durable=False)
            # A chunk sent again (or twice at once) replaces the row; the later write stands.
            cursor.execute(
                f"{_UPSERT_CHUNK}; {commit}",
                [dataset.pk, chunk.generation, index, chunk.size, chunk.stored_size, nonce, chunk.sha256],
            )
        except BaseException:
            try:
                cursor.execute(rollback)
            except psycopg.Error:  # the connection broke: the server ended the transaction itself
                pass
            raise
    return chunk


def _chunk_transaction(raw) -> tuple[str, str, str]:
    """(begin, commit, rollback) for putting a chunk on the psycopg connection `raw`: a transaction
    of its own where none is open (the chunk path in front of Django), otherwise a savepoint in the
    caller's (a view or test inside `transaction.atomic`). Sent as text with the queries, so the
    whole put takes two round trips (psycopg's own transaction blocks take more)."""
    if raw.autocommit and raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return "BEGIN", "COMMIT", "ROLLBACK"
    return (
        "SAVEPOINT put_chunk",
        "RELEASE SAVEPOINT put_chunk",
        "ROLLBACK TO SAVEPOINT put_chunk; RELEASE SAVEPOINT put_chunk",
    )


_LOCK_FOR_CHUNK = (
    "SELECT set_config('synchronous_commit', 'off', true), d.state, EXISTS (SELECT 1 FROM storage_grant g "
    "WHERE g.dataset_id = d.id AND g.user_id = %s AND g.level = %s) FROM storage_dataset d WHERE d.id = %s "
    "FOR SHARE OF d"
)
_UPSERT_CHUNK = (
    'INSERT INTO storage_chunk (dataset_id, generation, "index", size, stored_size, nonce, sha256, '
    "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, now()) "
    'ON CONFLICT (dataset_id, generation, "index") DO UPDATE SET size = EXCLUDED.size, '
    "stored_size = EXCLUDED.stored_size, nonce = EXCLUDED.nonce, sha256 = EXCLUDED.sha256"
)


def chunk_table(dataset: Dataset) -> list[Chunk]:
    return list(Chunk.objects.filter(dataset=dataset, generation=dataset.generation).order_by("index"))


def missing_chunks(dataset: Dataset) -> list[int]:
    have = set(
        Chunk.objects.filter(dataset=dataset, generation=dataset.generation).values_list("index", flat=True)
    )
    return [i for i in range(dataset.chunk_count) if i not in have]


def recovery_document(dataset: Dataset, key: bytes, chunks: list[Chunk]) -> dict | None:
    """The recovery file's content for the current generation (None without any root key wrap)."""
    root_wraps = {
        w.root_key.fingerprint: bytes(w.wrapped)
        for w in dataset.wraps.filter(generation=dataset.generation, root_key__isnull=False).select_related(
            "root_key"
        )
    }
    if not root_wraps:
        return None
    return build_recovery_document(
        dataset_id=dataset.mnemonic,
        dataset_name=dataset.name,
        file_name=dataset.file_name,
        chunk_size=dataset.chunk_size,
        chunks=[
            ChunkRecord(
                index=c.index,
                nonce=bytes(c.nonce),
                plaintext_sha256=bytes.fromhex(c.sha256),
                plaintext_size=c.size,
                ciphertext_size=c.stored_size,
                file=chunk_file_name(c.index),
            )
            for c in chunks
        ],
        data_key=key,
        wrapped_keys=root_wraps,
    )


def _drop_incompletely_stored(dataset: Dataset) -> None:
    """Chunks are written without a flush each (finish flushes them all); after a crash of the
    machine a chunk file may be shorter than recorded, or gone. Such chunks are dropped from the
    table, so finishing reports them missing and the client sends them again."""
    lost = [c.pk for c in chunk_table(dataset) if not _stored_whole(dataset, c)]
    if lost:
        Chunk.objects.filter(pk__in=lost).delete()


def _stored_whole(dataset: Dataset, chunk: Chunk) -> bool:
    try:
        return chunkstore.chunk_path(dataset, chunk.index).stat().st_size == chunk.stored_size
    except FileNotFoundError:
        return False


def finish_upload(dataset: Dataset, *, key: bytes | None = None, actor=None, request=None) -> Dataset:
    """All chunks present: compute the dataset hash, write the recovery file, make it available."""
    _drop_incompletely_stored(dataset)  # outside the transaction: a refusal below keeps it
    with transaction.atomic():
        dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
        _require_uploading(dataset)
        missing = missing_chunks(dataset)
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (" …" if len(missing) > 20 else "")
            raise ConflictError(f"{len(missing)} chunk(s) are missing: {shown}.", code="chunks_missing")
        data_key = upload_key(dataset, key)
        chunks = chunk_table(dataset)
        dataset.sha256 = crypto.dataset_hash(bytes.fromhex(c.sha256) for c in chunks)
        if not dataset.first_chunk_sha256 and chunks:
            dataset.first_chunk_sha256 = chunks[0].sha256
        chunkstore.sync_generation(dataset)  # every chunk on stable storage before it is available
        document = recovery_document(dataset, data_key, chunks)
        if document is not None:
            write_recovery_file(chunkstore.generation_dir(dataset), document)
        dataset.state, dataset.completed_at = DatasetState.AVAILABLE, timezone.now()
        dataset.sealed_key, dataset.sealed_until = "", None
        dataset.save(
            update_fields=[
                "sha256",
                "first_chunk_sha256",
                "state",
                "completed_at",
                "sealed_key",
                "sealed_until",
            ]
        )
        record_audit_event(
            "storage.upload_finished",
            actor=actor,
            request=request,
            obj=dataset,
            sha256=dataset.sha256,
            recovery_file=document is not None,
        )
    return dataset
