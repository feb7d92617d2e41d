"""Chunk files in the data directory: written atomically, read back whole, removed per generation.

Only ciphertext ever reaches these files. Paths: `datasets/<mnemonic>/g<N>/chunks/000000.bin`,
with `recovery.json` in `datasets/<mnemonic>/g<N>/` (the layout `storage.recovery` reads offline).
"""

from __future__ import annotations

import os
import secrets
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from portal.services.datastore import resolve
from storage.recovery import chunk_file_name


def generation_dir(dataset, generation: int | None = None) -> Path:
    return resolve(dataset.directory(generation))


def chunk_path(dataset, index: int, generation: int | None = None) -> Path:
    return generation_dir(dataset, generation) / chunk_file_name(index)


def write_chunk(
    dataset,
    index: int,
    ciphertext: bytes | memoryview,
    generation: int | None = None,
    *,
    durable: bool = True,
) -> None:
    """Write one chunk's ciphertext atomically (temp file, rename). `durable`: fsync it before the
    rename; a caller that syncs the whole generation before relying on it (`sync_generation`)
    writes with `durable=False` and pays for one flush instead of one per chunk."""
    target = chunk_path(dataset, index, generation)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(ciphertext)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    tmp.replace(target)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Flusher:
    """Flushes written chunk files to disk in a background thread while the caller goes on
    encrypting the next ones (fsync releases the GIL), so disk and CPU work overlap. Leaving the
    `with` block waits until every file added is flushed (and re-raises a failure)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk-flush")
        self._pending: list[Future] = []

    def add(self, path: Path) -> None:
        self._pending.append(self._pool.submit(_fsync_path, path))

    def __enter__(self) -> Flusher:
        return self

    def __exit__(self, *exc) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown(wait=True)


def sync_generation(dataset, generation: int | None = None) -> None:
    """Flush every chunk file of the generation, and its directories, to stable storage."""
    directory = generation_dir(dataset, generation) / "chunks"
    for path in sorted(directory.glob("*.bin")):
        _fsync_path(path)
    for folder in (directory, directory.parent):
        _fsync_path(folder)


def read_chunk(dataset, index: int, generation: int | None = None) -> bytes:
    with open(chunk_path(dataset, index, generation), "rb") as handle:
        return handle.read()


class ChunkBuffers:
    """Buffers one thread keeps while it works through many chunks (read, decrypted, encrypted),
    so that no chunk-sized object is made per chunk (fresh 2 MiB objects cost page faults)."""

    def __init__(self) -> None:
        self._buffers: dict[str, bytearray] = {}

    def get(self, name: str, size: int) -> memoryview:
        buffer = self._buffers.get(name)
        if buffer is None or len(buffer) < size:
            buffer = self._buffers[name] = bytearray(size)
        return memoryview(buffer)[:size]


def read_chunk_into(dataset, index: int, generation: int | None, buffer: memoryview) -> memoryview:
    """The chunk file's bytes read into `buffer` (at most its length), as a view of it; no new
    object per chunk. Give it one byte more than the recorded size to notice a longer file."""
    count = 0
    with open(chunk_path(dataset, index, generation), "rb", buffering=0) as handle:
        while count < len(buffer) and (got := handle.readinto(buffer[count:])):
            count += got
    return buffer[:count]


def remove_generation(dataset, generation: int) -> None:
    shutil.rmtree(generation_dir(dataset, generation), ignore_errors=True)


def remove_dataset_files(dataset) -> None:
    shutil.rmtree(resolve(f"datasets/{dataset.mnemonic}"), ignore_errors=True)
