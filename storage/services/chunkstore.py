"""Chunk files in the data directory: written atomically, read back whole, removed per generation.

Only ciphertext ever reaches these files. Paths: `datasets/<mnemonic>/g<N>/chunks/000000.bin`,
with `recovery.json` in `datasets/<mnemonic>/g<N>/` (the layout `storage.recovery` reads offline).

Chunk files are written and read with direct I/O (`O_DIRECT`) where the file system allows it
and the bytes lie in a block-aligned buffer (`ChunkBuffers` gives such buffers): the whole
blocks go between the buffer and the disk without a copy in the page cache, and only the last,
partial block passes through it. A chunk is written once and read again rarely (a download, a
re-key), so caching it would only push the database's pages out; filling fresh page-cache
memory cost more than the disk itself (on the benchmark's disk, 2 MiB chunk files reached
1.2 GB/s direct, 0.3 GB/s through the page cache). Where direct I/O is refused (tmpfs before
Linux 6.6, some network file systems), or `PORTAL_STORAGE_DIRECT_IO` is off, the page cache is
used as before; the files are the same either way.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from portal.services.datastore import resolve
from storage.recovery import chunk_file_name

# Direct I/O moves whole blocks between block-aligned memory and block-aligned file offsets; 4 KiB
# covers the disks' logical blocks (512 B or 4 KiB) and the memory alignment they ask for.
BLOCK = 4096
# Linux's; other systems (macOS, for development) have neither, and use the page cache.
O_DIRECT = getattr(os, "O_DIRECT", 0)
_ADVISE = hasattr(os, "posix_fadvise")


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
    try:
        write_file(tmp, ciphertext, durable=durable)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(target)


def write_file(path: Path, data: bytes | memoryview, *, durable: bool) -> None:
    """Create `path` holding `data`: its whole blocks written directly to the disk where that is
    possible (see the module's note), the rest through the page cache; `durable`: fsync it."""
    view = memoryview(data).cast("B")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        written = _write_direct(fd, view) if direct_io() else 0
        while written < len(view):
            written += os.write(fd, view[written:])
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def direct_io() -> bool:
    return bool(O_DIRECT) and bool(getattr(settings, "STORAGE_DIRECT_IO", True))


def _address(view: memoryview) -> int | None:
    """Where a writable buffer's bytes start in memory (None for a read-only or empty one)."""
    if view.readonly or not len(view):
        return None
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def _round_up(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class _Direct:
    """The file descriptor switched to direct I/O for the `with` block (and back after); `on`
    is False where the file system refuses it."""

    def __init__(self, fd: int) -> None:
        self.fd, self.flags, self.on = fd, fcntl.fcntl(fd, fcntl.F_GETFL), False

    def __enter__(self) -> _Direct:
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETFL, self.flags | O_DIRECT)
            self.on = True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
        return self

    def __exit__(self, *exc) -> None:
        if self.on:
            fcntl.fcntl(self.fd, fcntl.F_SETFL, self.flags)


def _write_direct(fd: int, view: memoryview) -> int:
    """How many bytes from the start of `view` went to the new file `fd` directly: its whole
    blocks, where `view` is block-aligned in memory and the file system allows it (else none);
    the caller writes the rest through the page cache."""
    whole = len(view) - len(view) % BLOCK
    address = _address(view)
    if not whole or address is None or address % BLOCK:
        return 0
    written = 0
    with _Direct(fd) as direct:
        if not direct.on:
            return 0
        try:
            while written < whole:
                written += os.write(fd, view[written:whole])
        except OSError as exc:  # refused after all (an odd device): the page cache takes the rest
            if exc.errno != errno.EINVAL:
                raise
    return written


def fsync_path(path: Path) -> None:
    """Flush a file (or folder) to stable storage by its path."""
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
        self._pending.append(self._pool.submit(fsync_path, path))

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
        fsync_path(path)
    for folder in (directory, directory.parent):
        fsync_path(folder)


def read_chunk(dataset, index: int, generation: int | None = None) -> bytes:
    with open(chunk_path(dataset, index, generation), "rb") as handle:
        return handle.read()


def aligned_buffer(size: int) -> mmap.mmap:
    """Page-aligned memory of whole blocks, at least `size` bytes: chunk files move to and from it
    directly."""
    return mmap.mmap(-1, max(BLOCK, _round_up(size)))


class ChunkBuffers:
    """Buffers one thread keeps while it works through many chunks (read, decrypted, encrypted),
    so that no chunk-sized object is made per chunk (fresh 2 MiB objects cost page faults). Each
    is an `aligned_buffer`."""

    def __init__(self) -> None:
        self._buffers: dict[str, mmap.mmap] = {}

    def get(self, name: str, size: int) -> memoryview:
        buffer = self._buffers.get(name)
        if buffer is None or len(buffer) < size:
            buffer = self._buffers[name] = aligned_buffer(size)
        return memoryview(buffer)[:size]


class KeptBuffers:
    """Buffers taken for one chunk at a time and given back, by any thread, for callers that keep
    none of their own (request bodies, a download's pieces read by whichever thread serves them).
    Up to `keep_bytes` of them are kept for the next chunks; a busier moment makes more (with
    `make`) and lets them go."""

    def __init__(self, keep_bytes: int, make=bytearray) -> None:
        self.keep_bytes = keep_bytes
        self.make = make
        self._free: list = []
        self._lock = threading.Lock()

    def take(self, size: int):
        with self._lock:
            for position, buffer in enumerate(self._free):
                if len(buffer) >= size:
                    return self._free.pop(position)
        return self.make(size)

    def give(self, buffer) -> None:
        with self._lock:
            if sum(map(len, self._free)) + len(buffer) <= self.keep_bytes:
                self._free.append(buffer)

    @contextmanager
    def lend(self, size: int) -> Iterator[memoryview]:
        buffer = self.take(size)
        try:
            yield memoryview(buffer)[:size]
        finally:
            self.give(buffer)


# Aligned buffers lent for reading chunk files (`downloads.decrypt_stored_chunk`).
lent = KeptBuffers(keep_bytes=16 * 1024 * 1024, make=aligned_buffer)


def read_chunk_into(
    dataset, index: int, generation: int | None, buffer: memoryview, *, streaming: bool = False
) -> memoryview:
    """The chunk file's bytes read into `buffer` (at most its length), as a view of it; no new
    object per chunk. Give it one byte more than the recorded size to notice a longer file.

    A buffer from `ChunkBuffers` or `lent` is read into directly from the disk (see the module's
    note). `streaming`: the caller reads the chunks in order and asked for this one ahead
    (`read_ahead`), so the page cache already holds it or is filling it: it is read from there,
    and the file's pages are let go afterwards."""
    return read_file_into(chunk_path(dataset, index, generation), buffer, streaming=streaming)


def read_file_into(path: Path, buffer: memoryview, *, streaming: bool = False) -> memoryview:
    """`read_chunk_into` for the file at `path` (the counterpart of `write_file`)."""
    with open(path, "rb", buffering=0) as handle:
        count = _read_direct(handle.fileno(), buffer) if direct_io() and not streaming else None
        if count is None:
            count = 0
            while count < len(buffer) and (got := handle.readinto(buffer[count:])):
                count += got
            if streaming and direct_io() and _ADVISE:
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return buffer[:count]


def read_ahead(dataset, index: int, generation: int | None = None) -> None:
    """Have the kernel start reading a chunk file into the page cache now, for a reader that
    will want it next (`read_chunk_into(..., streaming=True)`): the disk reads it while the
    reader decrypts and sends the one before. A missing file is left to that read to report."""
    if not _ADVISE:
        return
    try:
        fd = os.open(chunk_path(dataset, index, generation), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def _read_direct(fd: int, buffer: memoryview) -> int | None:
    """Bytes read directly into `buffer` from the start of the file `fd` (at most its length), or
    None where that cannot be done (an unaligned buffer, a file system without direct I/O).
    Direct reads take whole blocks: the buffer's memory must reach to the block after its end,
    as `ChunkBuffers`'s buffers do."""
    whole = memoryview(buffer.obj).cast("B") if buffer.obj is not None else None
    address = _address(buffer)
    if whole is None or address is None or address % BLOCK or _address(whole) != address:
        return None
    if len(whole) < _round_up(len(buffer)):
        return None
    target = whole[: _round_up(len(buffer))]
    count = 0
    with _Direct(fd) as direct:
        if not direct.on:
            return None
        try:
            while count < len(target):
                got = os.preadv(fd, [target[count:]], count)
                count += got
                if not got or count % BLOCK:  # a read ends off a block boundary only at the end
                    break
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return None
    return min(count, len(buffer))


def remove_generation(dataset, generation: int) -> None:
    shutil.rmtree(generation_dir(dataset, generation), ignore_errors=True)


def remove_dataset_files(dataset) -> None:
    shutil.rmtree(resolve(f"datasets/{dataset.mnemonic}"), ignore_errors=True)
