"""Scrubbing one dataset: re-read every stored chunk and report what is damaged.

Without a key the scrub checks what the server can check alone: every chunk of the current key
generation has a row and a file, and each file has exactly the recorded size (ciphertext plus
tag); the recovery file is present, readable and agrees with the chunk table. With the data key
(handed to the worker only sealed, like a re-key's) it also checks each chunk's GCM tag and the
SHA-256 of its plaintext. Damage is reported in the job's result and the audit log, never fixed
here: only a backup can bring a damaged chunk back.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

from django.db import transaction

from portal.models import Job
from portal.services.audit import record_audit_event
from portal.services.jobs import JobError, start_job
from storage import crypto
from storage.models import Chunk, Dataset, DatasetState, KeyWrap
from storage.recovery import RECOVERY_FILE_NAME, RecoveryError, chunk_file_name, read_recovery_file
from storage.services import chunkstore
from storage.services.access import check_key, grant_of
from storage.services.errors import ConflictError, KeyMismatchError, NoAccessError
from storage.services.rekey import Throttle, seal_for_job, unseal_for_job

log = logging.getLogger(__name__)

SCRUB_KIND = "storage.scrub"
SCRUBBABLE = (DatasetState.AVAILABLE, DatasetState.DELETED)


def _purpose(mnemonic: str, generation: int) -> str:
    return f"scrub-key:{mnemonic}:g{generation}"


def start_scrub(
    dataset: Dataset,
    *,
    actor,
    key: bytes | None = None,
    rate_limit_mb_s: float | None = None,
    request=None,
) -> Job:
    """Start a `storage.scrub` job. Grant holders may scrub; administrators without a grant may
    scrub sizes only (checking tags needs the key, which only a grant gives)."""
    grant = grant_of(actor, dataset)
    if grant is None and (key is not None or not actor.is_staff):
        raise NoAccessError(
            f"You have no access to the data of {dataset.mnemonic}; ask its owner to share it."
        )
    if dataset.state not in SCRUBBABLE:
        raise ConflictError(
            f"{dataset.mnemonic} is {dataset.get_state_display().lower()}; there is nothing stored to scrub."
        )
    if key is not None:
        try:
            check_key(dataset, key)
        except KeyMismatchError:
            record_audit_event(
                "storage.scrub_refused", actor=actor, request=request, obj=dataset, reason="wrong key"
            )
            raise
    params: dict[str, Any] = {"dataset": dataset.pk, "generation": dataset.generation}
    if key is not None:
        params["sealed_key"] = seal_for_job(key, _purpose(dataset.mnemonic, dataset.generation))
    if rate_limit_mb_s:
        params["rate_limit_mb_s"] = float(rate_limit_mb_s)
    with transaction.atomic():
        job = start_job(SCRUB_KIND, user=actor, target=dataset, params=params)
        record_audit_event(
            "storage.scrub_started",
            actor=actor,
            request=request,
            obj=dataset,
            job=job.pk,
            generation=dataset.generation,
            tags=key is not None,
        )
    return job


def scrub_dataset(
    dataset: Dataset, progress=None, *, key: bytes | None = None, rate_limit_mb_s: float | None = None
) -> dict[str, Any]:
    """Check the current generation's chunks (and, with `key`, their tags); returns the report.

    `damaged` lists `{"index", "problem"}` for each chunk that failed; `recovery_file` says what is
    wrong with the recovery file, or "ok" (or "none" when no root key wraps the key).
    """
    generation = dataset.generation
    rows = list(Chunk.objects.filter(dataset=dataset, generation=generation).order_by("index"))
    by_index = {row.index: row for row in rows}
    damaged: list[dict[str, Any]] = []
    for index in range(dataset.chunk_count):
        if index not in by_index:
            damaged.append({"index": index, "problem": "missing from the chunk table"})
    throttle = Throttle(rate_limit_mb_s)
    verified = 0
    total = len(rows)
    for position, row in enumerate(rows):
        problem = _check_chunk(dataset, row, key)
        if problem:
            damaged.append({"index": row.index, "problem": problem})
        else:
            verified += 1
        throttle(row.stored_size)
        if progress is not None:
            progress((position + 1) / max(total, 1), f"Checked chunk {position + 1} of {total}")
    damaged.sort(key=lambda d: d["index"])
    dataset.refresh_from_db()
    if dataset.generation != generation:
        raise JobError(f"{dataset.mnemonic} was re-keyed while it was scrubbed; scrub it again.")
    return {
        "dataset": dataset.mnemonic,
        "generation": generation,
        "chunks": dataset.chunk_count,
        "verified": verified,
        "tags_checked": key is not None,
        "damaged": damaged,
        "recovery_file": _check_recovery_file(dataset, rows),
    }


def _check_chunk(dataset: Dataset, row: Chunk, key: bytes | None) -> str:
    """What is wrong with one stored chunk, or "" if nothing is."""
    if row.stored_size != row.size + crypto.TAG_BYTES:
        return f"its row records {row.stored_size} stored bytes for {row.size} plaintext bytes"
    try:
        ciphertext = chunkstore.read_chunk(dataset, row.index, row.generation)
    except FileNotFoundError:
        return "its file is missing"
    except OSError as exc:
        return f"its file cannot be read ({exc.strerror or exc})"
    if len(ciphertext) != row.stored_size:
        return f"{len(ciphertext)} bytes stored, {row.stored_size} recorded"
    if key is None:
        return ""
    try:
        plaintext = crypto.decrypt_chunk(key, dataset.mnemonic, row.index, bytes(row.nonce), ciphertext)
    except crypto.ChunkIntegrityError:
        return "authentication failed: altered or moved"
    if hashlib.sha256(plaintext).hexdigest() != row.sha256:
        return "its content does not match its recorded SHA-256"
    return ""


def _check_recovery_file(dataset: Dataset, rows: list[Chunk]) -> str:
    roots = set(
        KeyWrap.objects.filter(
            dataset=dataset, generation=dataset.generation, root_key__isnull=False
        ).values_list("root_key__fingerprint", flat=True)
    )
    path = chunkstore.generation_dir(dataset) / RECOVERY_FILE_NAME
    if not path.exists():
        return "missing" if roots else "none"
    try:
        document = read_recovery_file(path)
    except RecoveryError as exc:
        return f"invalid: {exc}"
    if document["key_fingerprint"] != dataset.key_fingerprint:
        return "stale: it is for another key"
    listed = {wrap["root_key_fingerprint"] for wrap in document["wrapped_keys"]}
    if roots - listed:
        return f"incomplete: it lacks {len(roots - listed)} root key(s)"
    table = [
        (c["index"], c["file"], c["nonce"], c["plaintext_sha256"], c["ciphertext_size"])
        for c in document["chunks"]
    ]
    expected = [
        (
            c.index,
            chunk_file_name(c.index),
            base64.b64encode(bytes(c.nonce)).decode("ascii"),
            c.sha256,
            c.stored_size,
        )
        for c in rows
    ]
    if table != expected:
        return "stale: its chunk table differs from the database's"
    return "ok"


def run_scrub(
    job: Job | None,
    progress,
    *,
    dataset: int,
    generation: int,
    sealed_key: str | None = None,
    rate_limit_mb_s: float | None = None,
) -> dict[str, Any]:
    """The `storage.scrub` job: scrub one dataset and record the outcome in the audit log."""
    found = Dataset.objects.filter(pk=dataset).first()
    if found is None:
        raise JobError("The dataset no longer exists.")
    key = None
    if sealed_key:
        key = unseal_for_job(sealed_key, _purpose(found.mnemonic, generation))
        if found.generation != generation or crypto.key_fingerprint(key) != found.key_fingerprint:
            raise JobError(f"{found.mnemonic} was re-keyed since the scrub was asked for; scrub it again.")
    if found.state not in SCRUBBABLE:
        raise JobError(f"{found.mnemonic} is {found.get_state_display().lower()}; nothing to scrub.")
    result = scrub_dataset(found, progress, key=key, rate_limit_mb_s=rate_limit_mb_s)
    result["summary"] = (
        f"{result['verified']} of {result['chunks']} chunk(s) of {found.mnemonic} verified"
        f"{' (tags checked)' if key is not None else ' (sizes only)'}; {len(result['damaged'])} damaged; "
        f"recovery file: {result['recovery_file']}"
    )
    if result["damaged"] or result["recovery_file"] not in ("ok", "none"):
        log.warning("scrub of dataset %s found damage: %s", found.mnemonic, result["summary"])
    if progress is not None:
        progress.log(result["summary"])
    record_audit_event(
        "storage.scrubbed",
        actor=job.created_by if job is not None and job.created_by_id else None,
        obj=found,
        job=job.pk if job else None,
        generation=generation,
        tags_checked=key is not None,
        verified=result["verified"],
        damaged=[d["index"] for d in result["damaged"]],
        recovery_file=result["recovery_file"],
    )
    return result
