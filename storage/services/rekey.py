"""Re-keying a dataset: every chunk decrypted and encrypted again under a fresh data key.

After a key was lost or a grant revoked, a write holder (or an operator with a root key) re-keys
the dataset so that a copy of the old key opens nothing. The work is a `storage.rekey` job on the
`crypto` queue (`storage.tasks`); this module holds its logic.

Why it is crash-safe: generation N+1 is written beside generation N, in its own directory
(`datasets/<mnemonic>/g<N+1>/`) and its own `Chunk` rows, which nothing reads while
`Dataset.generation` is N. The switch – new wraps for every grant holder's active keys and every
active root key, the new recovery file, `generation` and `key_fingerprint`, removal of the old rows
– is one database transaction. A crash before it commits leaves generation N untouched (readable
with the old key); a crash after leaves generation N+1 complete (readable with the new key). Only
then are the old files removed: at once without a grace period, else by a task of their own
(`OLD_FILES_TASK`) once the grace period is over, so that no worker waits meanwhile. Running the
job again continues: chunks of N+1 that verify under the new key are kept, the rest are written
again; a job that finds the switch already made only removes the old files.

Why the key never leaks: the web process checks the old key by fingerprint, makes the new key and
hands both to the worker only sealed (`storage.crypto.seal`, under the server secret, for a purpose
naming the dataset and generation, with an expiry) in the job's parameters. Neither key is ever
logged, stored in the clear or sent through the broker.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from portal.models import Job, JobState
from portal.services.audit import record_audit_event
from portal.services.jobs import JobError, content_type_of, save_and_publish, start_job
from storage import crypto
from storage.models import Chunk, Dataset, DatasetState, Grant, GrantLevel, KeyWrap
from storage.recovery import write_recovery_file
from storage.services import chunkstore
from storage.services.access import check_key, require_grant, wrap_for_root_keys, wrap_for_user
from storage.services.downloads import IntegrityFailureError, decrypt_stored_chunk
from storage.services.errors import ConflictError, KeyMismatchError
from storage.services.uploads import lazy_commit, recovery_document

log = logging.getLogger(__name__)

REKEY_KIND = "storage.rekey"
GENERATION_DIR = re.compile(r"^g(\d+)$")


# --- keys handed to workers ---------------------------------------------------------------------


def seal_for_job(key: bytes, purpose: str) -> str:
    """`key` sealed under the server secret for `purpose`, for as long as a job may wait and run."""
    return crypto.seal(
        crypto.sealing_secret(), key, purpose=purpose, ttl_seconds=settings.STORAGE_JOB_KEY_TTL
    )


def unseal_for_job(token: str, purpose: str) -> bytes:
    """Open a key sealed by `seal_for_job`; a `JobError` users understand when it cannot be."""
    try:
        return crypto.unseal(crypto.sealing_secret(), token, purpose=purpose)
    except crypto.SealExpiredError:
        raise JobError(
            "The key handed to this job has expired; start it again with the dataset's key."
        ) from None
    except crypto.SealError:
        raise JobError(
            "The key handed to this job cannot be opened (it was altered, or the server secret "
            "changed); start it again with the dataset's key."
        ) from None


def _purpose(which: str, mnemonic: str, generation: int) -> str:
    return f"rekey-{which}:{mnemonic}:g{generation}"


class Throttle:
    """Sleeps so that at most `mb_per_s` MiB/s are processed (None or 0: no limit)."""

    def __init__(self, mb_per_s: float | None):
        self.rate = float(mb_per_s) * 1024 * 1024 if mb_per_s else 0.0
        self.started = time.monotonic()
        self.done = 0

    def __call__(self, nbytes: int) -> None:
        if not self.rate:
            return
        self.done += nbytes
        ahead = self.done / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)


# --- starting -----------------------------------------------------------------------------------


def active_rekey(dataset: Dataset) -> Job | None:
    """A re-key job of `dataset` that is queued or running, if any."""
    return Job.objects.filter(
        target_type=content_type_of(Dataset),
        target_id=dataset.pk,
        kind=REKEY_KIND,
        state__in=[JobState.QUEUED, JobState.RUNNING],
    ).first()


def start_rekey(
    dataset: Dataset,
    *,
    key: bytes,
    actor=None,
    operator: str = "",
    rate_limit_mb_s: float | None = None,
    request=None,
) -> Job:
    """Check the current data key and start a `storage.rekey` job with a fresh one.

    `actor` (a user) needs a write grant. Without an actor, the caller is the operator's command,
    which proved that it holds a root key by unwrapping `key` with it (`operator` names it for
    the audit log). A wrong key is refused (`KeyMismatchError`, audited) and nothing starts.
    """
    if actor is not None:
        require_grant(actor, dataset, GrantLevel.WRITE)
    who = {"username": operator} if actor is None and operator else {}
    if dataset.state != DatasetState.AVAILABLE:
        raise ConflictError(
            f"{dataset.mnemonic} is {dataset.get_state_display().lower()}; only available datasets "
            "can be re-keyed."
        )
    try:
        check_key(dataset, key)
    except KeyMismatchError:
        record_audit_event(
            "storage.rekey_refused", actor=actor, request=request, obj=dataset, reason="wrong key", **who
        )
        raise
    with transaction.atomic():
        locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
        if locked.generation != dataset.generation or locked.key_fingerprint != dataset.key_fingerprint:
            raise ConflictError(f"{dataset.mnemonic} was re-keyed meanwhile; unwrap its new key first.")
        running = active_rekey(locked)
        if running is not None:
            raise ConflictError(
                f"A re-key of {dataset.mnemonic} is already {running.state} (job {running.pk}); wait "
                "for it, or cancel it first."
            )
        generation = locked.generation
        new_key = crypto.new_data_key()
        params: dict[str, Any] = {
            "dataset": locked.pk,
            "generation": generation,
            "sealed_old_key": seal_for_job(key, _purpose("old", locked.mnemonic, generation)),
            "sealed_new_key": seal_for_job(new_key, _purpose("new", locked.mnemonic, generation)),
            "new_key_fingerprint": crypto.key_fingerprint(new_key),
        }
        if rate_limit_mb_s:
            params["rate_limit_mb_s"] = float(rate_limit_mb_s)
        if actor is None:
            params["operator"] = operator or "operator"
        job = start_job(REKEY_KIND, user=actor, target=locked, params=params)
        record_audit_event(
            "storage.rekey_started",
            actor=actor,
            request=request,
            obj=locked,
            job=job.pk,
            generation=generation,
            new_key_fingerprint=params["new_key_fingerprint"],
            **who,
        )
    return job


# --- running (in the worker) ----------------------------------------------------------------------


@contextmanager
def rekey_lock(dataset: Dataset) -> Iterator[None]:
    """One re-key per dataset at a time, across workers: a PostgreSQL session advisory lock.

    It belongs to the worker's database connection, so a killed worker's lock goes with its
    connection and a second run can take it at once.
    """
    name = f"storage.rekey:{dataset.pk}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [name])
        (taken,) = cursor.fetchone()
    if not taken:
        raise JobError(f"Another re-key of {dataset.mnemonic} is running; wait for it to finish.")
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])
        except DatabaseError:  # the connection is gone, and the lock with it
            pass


def _check_starter(job: Job | None, dataset: Dataset) -> None:
    """A re-key started by a user (or retried by one) needs that user's write grant, now."""
    if job is None or job.created_by_id is None:
        return
    grant = Grant.objects.filter(dataset=dataset, user_id=job.created_by_id).first()
    if grant is None or grant.level != GrantLevel.WRITE:
        raise JobError(f"Only holders of a write grant on {dataset.mnemonic} may re-key it.")


def reencrypt_chunks(
    dataset: Dataset,
    old_key: bytes,
    new_key: bytes,
    progress=None,
    *,
    rate_limit_mb_s: float | None = None,
    stop_after: int | None = None,
) -> dict[str, int]:
    """Write generation N+1: each chunk of generation N decrypted (its tag checked) and encrypted
    under `new_key` with a fresh nonce, file first, then its `Chunk` row, which keeps the plaintext
    SHA-256 recorded at upload.

    Chunks of N+1 left by an earlier run that verify under `new_key` are kept. `stop_after` ends
    after that many chunks (the tests stop here to stand for a crash).

    Chunks are read, decrypted, encrypted and written by `REKEY_THREADS` threads side by side
    (AES-GCM and file input/output release the GIL, so they use every core); this
    thread takes their results in order and records the rows, the progress and the throttle.
    """
    generation = dataset.generation
    target = generation + 1
    old_rows = list(Chunk.objects.filter(dataset=dataset, generation=generation).order_by("index"))
    if [row.index for row in old_rows] != list(range(dataset.chunk_count)):
        raise JobError(f"The chunk table of {dataset.mnemonic} is incomplete; scrub it before re-keying.")
    written = {c.index: c for c in Chunk.objects.filter(dataset=dataset, generation=target)}
    throttle = Throttle(rate_limit_mb_s)
    counts = {"reencrypted": 0, "reused": 0}
    pending: list[Chunk] = []
    total = len(old_rows)
    rows = old_rows if stop_after is None else old_rows[:stop_after]

    local = threading.local()

    def one(row: Chunk) -> Chunk | None:
        """The new row of a re-encrypted chunk; None when an earlier run's chunk is kept."""
        buffers = getattr(local, "buffers", None)
        if buffers is None:
            buffers = local.buffers = chunkstore.ChunkBuffers()
        earlier = written.get(row.index)
        if earlier is not None and _verifies(dataset, earlier, new_key, row.sha256, buffers):
            return None
        try:
            # The old key's GCM tag proves this is the plaintext encrypted for this dataset and
            # index, whose SHA-256 was checked at upload: it is not hashed again (scrub does).
            plaintext = decrypt_stored_chunk(dataset, row, old_key, check_hash=False, buffers=buffers)
        except IntegrityFailureError as exc:
            raise JobError(
                f"Chunk {row.index} of {dataset.mnemonic} is damaged, so it cannot be re-keyed; the "
                "dataset is unchanged. Scrub it and ask the operators to restore the chunk."
            ) from exc
        ciphertext = buffers.get("sealed", len(plaintext) + crypto.TAG_BYTES)
        nonce = crypto.encrypt_chunk_into(new_key, dataset.mnemonic, row.index, plaintext, ciphertext)
        # Flushed in the background while the next chunks are encrypted (the switch flushes the
        # whole generation once more); a rerun after a crash keeps only chunks that verify.
        chunkstore.write_chunk(dataset, row.index, ciphertext, generation=target, durable=False)
        return Chunk(
            dataset=dataset,
            generation=target,
            index=row.index,
            size=row.size,
            stored_size=len(ciphertext),
            nonce=nonce,
            sha256=row.sha256,
        )

    # Each thread keeps three chunk-sized buffers: fewer threads for very large chunks.
    threads = max(1, min(REKEY_THREADS, REKEY_BUFFER_BYTES // (3 * max(1, dataset.chunk_size))))
    with chunkstore.Flusher() as flusher, ThreadPoolExecutor(threads, thread_name_prefix="rekey") as pool:
        in_flight: deque[tuple[int, Chunk, Future]] = deque()
        queue = iter(enumerate(rows))
        try:
            while True:
                # Keep every thread busy with one chunk and one more waiting: a few chunks in memory.
                for position, row in itertools.islice(queue, 2 * threads - len(in_flight)):
                    in_flight.append((position, row, pool.submit(one, row)))
                if not in_flight:
                    break
                position, row, future = in_flight.popleft()
                made = future.result()
                if made is None:
                    counts["reused"] += 1
                else:
                    flusher.add(chunkstore.chunk_path(dataset, row.index, target))
                    if not pending:
                        oldest = time.monotonic()
                    pending.append(made)
                    if len(pending) >= ROW_BATCH or time.monotonic() - oldest >= ROW_SECONDS:
                        _save_rows(pending)
                    counts["reencrypted"] += 1
                    throttle(row.size)
                if progress is not None:
                    progress(0.95 * (position + 1) / total, f"Re-encrypted chunk {position + 1} of {total}")
        except BaseException:
            for _, _, future in in_flight:
                future.cancel()
            raise
    _save_rows(pending)
    return counts


# Threads re-encrypting chunks side by side (one per core, at most 4), and the memory their
# buffers may take together.
REKEY_THREADS = max(1, min(4, os.cpu_count() or 1))
REKEY_BUFFER_BYTES = 96 * 1024 * 1024
# Chunk rows are written per query while re-encrypting, 32 at a time or after half a second (a
# slow, throttled re-key): a rerun after a crash redoes at most these.
ROW_BATCH = 32
ROW_SECONDS = 0.5


def _save_rows(pending: list[Chunk]) -> None:
    """Record re-encrypted chunks in one query (replacing rows an earlier run left)."""
    if pending:
        with lazy_commit():  # a row lost in a crash is written again by the next run
            Chunk.objects.bulk_create(
                pending,
                update_conflicts=True,
                unique_fields=["dataset", "generation", "index"],
                update_fields=["size", "stored_size", "nonce", "sha256"],
            )
        pending.clear()


def _verifies(dataset: Dataset, chunk: Chunk, key: bytes, sha256: str, buffers=None) -> bool:
    if chunk.sha256 != sha256:
        return False
    try:
        decrypt_stored_chunk(dataset, chunk, key, buffers=buffers)
    except IntegrityFailureError:
        return False
    return True


def switch_generation(
    dataset: Dataset, new_key: bytes, *, generation: int, actor=None, job: Job | None = None, **audit
) -> dict[str, int]:
    """Make generation N+1 the dataset's, in one transaction; returns what was wrapped.

    New wraps for every grant holder's active keys and every active root key, the recovery file
    of N+1, `generation` and `key_fingerprint`; the wraps and chunk rows of older generations
    are deleted. The old files stay until `remove_old_generations`.
    """
    target = generation + 1
    chunkstore.sync_generation(dataset, target)  # on stable storage before anything points to it
    with transaction.atomic():
        dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
        if dataset.generation != generation:
            raise JobError(f"{dataset.mnemonic} was re-keyed by another job meanwhile.")
        if dataset.state != DatasetState.AVAILABLE:
            raise JobError(
                f"{dataset.mnemonic} became {dataset.get_state_display().lower()} during the re-key; "
                "it keeps its old key."
            )
        rows = list(Chunk.objects.filter(dataset=dataset, generation=target).order_by("index"))
        old = list(
            Chunk.objects.filter(dataset=dataset, generation=generation)
            .order_by("index")
            .values_list("sha256", flat=True)
        )
        if [c.index for c in rows] != list(range(dataset.chunk_count)) or [c.sha256 for c in rows] != old:
            raise JobError(f"The new generation of {dataset.mnemonic} is incomplete; run the re-key again.")
        KeyWrap.objects.filter(dataset=dataset, generation=target).delete()  # of an earlier attempt
        wraps = sum(
            wrap_for_user(dataset, grant.user, new_key, generation=target)
            for grant in Grant.objects.filter(dataset=dataset).select_related("user")
        )
        root_wraps = wrap_for_root_keys(dataset, new_key, generation=target)
        if not wraps and not root_wraps:
            raise JobError(
                f"Nobody could read {dataset.mnemonic} under a new key: no grant holder has an active "
                "key and there is no active root key. It keeps its old key."
            )
        dataset.generation = target
        dataset.key_fingerprint = crypto.key_fingerprint(new_key)
        document = recovery_document(dataset, new_key, rows)
        if document is not None:
            write_recovery_file(chunkstore.generation_dir(dataset, target), document)
        Dataset.objects.filter(pk=dataset.pk).update(
            generation=target, key_fingerprint=dataset.key_fingerprint, sealed_key="", sealed_until=None
        )
        KeyWrap.objects.filter(dataset=dataset).exclude(generation=target).delete()
        Chunk.objects.filter(dataset=dataset).exclude(generation=target).delete()
        record_audit_event(
            "storage.rekeyed",
            actor=actor,
            obj=dataset,
            job=job.pk if job else None,
            generation=target,
            previous_generation=generation,
            key_fingerprint=dataset.key_fingerprint,
            chunks=len(rows),
            wraps=wraps,
            root_wraps=root_wraps,
            recovery_file=document is not None,
            **audit,
        )
    return {"wraps": wraps, "root_wraps": root_wraps}


# The task that removes a re-keyed dataset's old files after the grace period (`storage.tasks`;
# sent by name, so that this module needs no tasks), and its queue.
OLD_FILES_TASK = "storage.remove_old_generations"
OLD_FILES_QUEUE = "crypto"


def remove_old_generations(dataset: Dataset, below: int | None = None) -> list[int]:
    """Remove the directories of generations older than the current one (and than `below`, where
    given: a removal scheduled after one switch spares the generation a later re-key left for
    its own grace period); returns their numbers."""
    dataset = Dataset.objects.get(pk=dataset.pk)
    base = chunkstore.generation_dir(dataset).parent
    limit = dataset.generation if below is None else min(below, dataset.generation)
    removed = []
    if base.is_dir():
        for entry in sorted(base.iterdir()):
            match = GENERATION_DIR.match(entry.name)
            if match and int(match.group(1)) < limit:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(int(match.group(1)))
    return removed


def run_rekey(
    job: Job | None,
    progress,
    *,
    dataset: int,
    generation: int,
    sealed_old_key: str,
    sealed_new_key: str,
    new_key_fingerprint: str,
    rate_limit_mb_s: float | None = None,
    operator: str = "",
    grace_seconds: float | None = None,
) -> dict[str, Any]:
    """The `storage.rekey` job: re-encrypt, switch, remove the old files. Safe to run again."""
    found = Dataset.objects.filter(pk=dataset).first()
    if found is None:
        raise JobError("The dataset no longer exists.")
    mnemonic = found.mnemonic
    new_key = unseal_for_job(sealed_new_key, _purpose("new", mnemonic, generation))
    if crypto.key_fingerprint(new_key) != new_key_fingerprint:
        raise JobError("The new key handed to this job does not match its fingerprint.")
    audit = {"username": operator} if operator and (job is None or job.created_by_id is None) else {}
    actor = job.created_by if job is not None and job.created_by_id else None
    with rekey_lock(found):
        found.refresh_from_db()
        if found.generation == generation + 1 and found.key_fingerprint == new_key_fingerprint:
            _message(job, progress, "Already switched to the new key; removing the old files")
            switched = None
        else:
            if found.generation != generation:
                raise JobError(f"{mnemonic} was re-keyed by another job meanwhile; nothing to do.")
            _check_starter(job, found)
            old_key = unseal_for_job(sealed_old_key, _purpose("old", mnemonic, generation))
            if crypto.key_fingerprint(old_key) != found.key_fingerprint:
                raise JobError(f"The key handed to this job is not the key of {mnemonic}.")
            if found.state != DatasetState.AVAILABLE:
                raise JobError(f"{mnemonic} is {found.get_state_display().lower()}; it cannot be re-keyed.")
            if progress is not None:
                progress.log(
                    f"Re-encrypting {found.chunk_count} chunk(s) into key generation {generation + 1}"
                )
            counts = reencrypt_chunks(found, old_key, new_key, progress, rate_limit_mb_s=rate_limit_mb_s)
            if counts["reused"] and progress is not None:
                progress.log(f"{counts['reused']} chunk(s) written by an earlier run were kept")
            if progress is not None:
                progress(0.97, "Switching to the new key")
            switched = {
                **counts,
                **switch_generation(found, new_key, generation=generation, actor=actor, job=job, **audit),
            }
            found.refresh_from_db()
        grace = settings.STORAGE_REKEY_GRACE_SECONDS if grace_seconds is None else grace_seconds
        # Downloads that began before the switch still read the old files for the grace period.
        later = switched is not None and grace > 0 and schedule_old_files_removal(found, grace)
        removed = [] if later else remove_old_generations(found)
    result: dict[str, Any] = {
        "dataset": mnemonic,
        "generation": found.generation,
        "key_fingerprint": found.key_fingerprint,
        "chunks": found.chunk_count,
        "removed_generations": removed,
    }
    if switched is None:
        result["summary"] = f"{mnemonic} was already on key generation {found.generation}; old files removed"
    else:
        result.update(switched)
        result["summary"] = (
            f"Re-keyed {mnemonic} to key generation {found.generation}: {found.chunk_count} chunk(s) "
            f"({switched['reused']} kept from an earlier run), wrapped for {switched['wraps']} user "
            f"key(s) and {switched['root_wraps']} root key(s)"
        )
        if later:
            result["old_files_removed_in_seconds"] = grace
            result["summary"] += f"; the old files go in {grace:g} s"
    log.info("re-keyed dataset %s to generation %s", mnemonic, found.generation)
    return result


def schedule_old_files_removal(dataset: Dataset, delay: float) -> bool:
    """Have the old generations of `dataset` (older than its current one) removed in `delay`
    seconds by `OLD_FILES_TASK`. Where the task cannot be sent (the broker is away), wait out the
    delay here and return False, for the caller to remove them: the switch is made, and the old
    files must not stay."""
    from celery import current_app

    try:
        current_app.send_task(
            OLD_FILES_TASK, args=[dataset.pk, dataset.generation], countdown=delay, queue=OLD_FILES_QUEUE
        )
    except Exception:  # noqa: BLE001 - any failure of the broker: fall back to waiting here
        log.warning("could not schedule the removal of %s's old files; removing them in %g s", dataset, delay)
        time.sleep(delay)
        return False
    return True


def _message(job: Job | None, progress, text: str) -> None:
    """Show `text` without checking for a cancel request (past the switch, cancelling is moot)."""
    if job is None or progress is None:
        return
    job.message = text[:500]
    save_and_publish(job, ["message"])
