"""The data directory: writing files with recorded checksums, and scrubbing them.

All apps keep their files under PORTAL_DATA_DIR through these functions, so that one scrub job
can verify everything that was ever written. Paths given here are relative to that directory.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.utils import timezone

from portal.models import StoredFile

BLOCK_SIZE = 1024 * 1024


class DataStoreError(Exception):
    """A problem with the data directory itself (missing, unreadable, bad path)."""


def data_dir() -> Path:
    return Path(settings.PORTAL_DATA_DIR)


def resolve(relative_path: str) -> Path:
    """The absolute path for `relative_path`, refusing anything that escapes the data directory."""
    rel = PurePosixPath(relative_path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise DataStoreError(f"invalid path in data directory: {relative_path!r}")
    return data_dir().joinpath(*rel.parts)


def store_chunks(relative_path: str, chunks: Iterable[bytes]) -> StoredFile:
    """Write a file atomically (temp file, fsync, rename) and record its size and SHA-256."""
    target = resolve(relative_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    size = 0
    with open(tmp, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(target)
    stored, _ = StoredFile.objects.update_or_create(
        path=str(PurePosixPath(relative_path)),
        defaults={"size": size, "sha256": digest.hexdigest(), "last_verified_at": timezone.now()},
    )
    return stored


def store_bytes(relative_path: str, data: bytes) -> StoredFile:
    return store_chunks(relative_path, [data])


def scrub(
    progress: Callable[[float | None, str | None], None],
    *,
    rate_limit_mb_s: float | None = None,
) -> dict:
    """Re-read every registered file, compare size and SHA-256, report damage.

    `rate_limit_mb_s` throttles reading so that a scrub does not starve interactive use of the
    disk. Returns counts plus the lists of missing and damaged files; a file that verifies gets
    its `last_verified_at` updated.
    """
    root = data_dir()
    if not root.is_dir():
        raise DataStoreError(f"The data directory {root} does not exist or is not a directory.")
    files = list(StoredFile.objects.order_by("path"))
    total_bytes = sum(f.size for f in files) or 1
    done_bytes = 0
    missing: list[str] = []
    damaged: list[dict] = []
    verified = 0
    started = time.monotonic()
    progress(0.0, f"Checking {len(files)} files")
    for index, stored in enumerate(files, start=1):
        path = root / stored.path
        digest = hashlib.sha256()
        size = 0
        try:
            with open(path, "rb") as handle:
                while block := handle.read(BLOCK_SIZE):
                    digest.update(block)
                    size += len(block)
                    done_bytes += len(block)
                    if rate_limit_mb_s:
                        ahead = done_bytes / (rate_limit_mb_s * 1024 * 1024) - (
                            time.monotonic() - started
                        )
                        if ahead > 0:
                            time.sleep(ahead)
                    progress(min(done_bytes / total_bytes, 0.999),
                             f"Checked {index - 1} of {len(files)} files")
        except FileNotFoundError:
            missing.append(stored.path)
            continue
        if size != stored.size or digest.hexdigest() != stored.sha256:
            damaged.append({
                "path": stored.path,
                "expected_size": stored.size,
                "actual_size": size,
                "expected_sha256": stored.sha256,
                "actual_sha256": digest.hexdigest(),
            })
        else:
            verified += 1
            StoredFile.objects.filter(pk=stored.pk).update(last_verified_at=timezone.now())
        progress(min(done_bytes / total_bytes, 0.999), f"Checked {index} of {len(files)} files")
    return {
        "files": len(files),
        "verified": verified,
        "missing": missing,
        "damaged": damaged,
        "bytes_read": done_bytes,
    }
