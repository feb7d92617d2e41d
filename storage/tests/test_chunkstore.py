"""Chunk files written and read past the page cache (direct I/O) where the file system allows it,
through it otherwise, with the same bytes on disk either way."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from storage.services import chunkstore

SIZES = [0, 1, 4095, 4096, 4097, 65536 + 16, 2 * 1024 * 1024 + 16]


class Place:
    """Where a dataset's chunk files lie (what `chunkstore` asks of a dataset)."""

    mnemonic = "test_chunk_files"

    def directory(self, generation=None) -> str:
        return f"datasets/{self.mnemonic}/g{generation or 1}"


def direct_io_allowed(folder: Path) -> bool:
    if not chunkstore.O_DIRECT:  # not Linux
        return False
    probe = folder / ".probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | chunkstore.O_DIRECT, 0o600)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    os.close(fd)
    probe.unlink()
    return True


def cached_bytes(path: Path) -> int:
    """How much of the file the page cache holds (util-linux `fincore`)."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


@pytest.fixture
def place(settings) -> Place:
    chunkstore.chunk_path(Place(), 0).parent.mkdir(parents=True, exist_ok=True)
    return Place()


@pytest.fixture
def direct_place(place, settings) -> Place:
    if not direct_io_allowed(Path(settings.PORTAL_DATA_DIR)):
        pytest.skip("the test data directory's file system refuses direct I/O")
    return place


def filled(buffers: chunkstore.ChunkBuffers, name: str, data: bytes) -> memoryview:
    view = buffers.get(name, len(data))
    view[:] = data
    return view


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("direct", [True, False])
def test_chunk_files_hold_the_same_bytes_written_and_read_either_way(place, settings, size, direct):
    settings.STORAGE_DIRECT_IO = direct
    data = os.urandom(size)
    buffers = chunkstore.ChunkBuffers()
    chunkstore.write_chunk(place, 3, filled(buffers, "sealed", data))
    path = chunkstore.chunk_path(place, 3)
    assert path.read_bytes() == data
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    for streaming in (False, True):
        got = chunkstore.read_chunk_into(place, 3, None, buffers.get("stored", size + 1), streaming=streaming)
        assert bytes(got) == data
    # Plain objects (the Django view's bytes) and a lent buffer work too.
    chunkstore.write_chunk(place, 4, data)
    with chunkstore.lent.lend(size + 1) as stored:
        assert bytes(chunkstore.read_chunk_into(place, 4, None, stored)) == data


def test_whole_blocks_go_to_the_disk_directly_and_only_the_last_one_is_cached(direct_place, settings):
    if shutil.which("fincore") is None:
        pytest.skip("fincore (util-linux) is not installed")
    size = 2 * 1024 * 1024 + 16
    data = os.urandom(size)
    buffers = chunkstore.ChunkBuffers()
    chunkstore.write_chunk(direct_place, 0, filled(buffers, "sealed", data))
    path = chunkstore.chunk_path(direct_place, 0)
    assert cached_bytes(path) <= chunkstore.BLOCK  # the 16 bytes after the whole blocks
    assert bytes(chunkstore.read_chunk_into(direct_place, 0, None, buffers.get("stored", size + 1))) == data
    assert cached_bytes(path) <= chunkstore.BLOCK  # read directly as well
    # A streaming reader asks for the next file ahead, reads it from the cache and lets it go.
    chunkstore.write_chunk(direct_place, 1, filled(buffers, "sealed", data))
    chunkstore.read_ahead(direct_place, 1)
    got = chunkstore.read_chunk_into(direct_place, 1, None, buffers.get("stored", size + 1), streaming=True)
    assert bytes(got) == data
    assert cached_bytes(chunkstore.chunk_path(direct_place, 1)) == 0

    # Switched off, the page cache takes the whole file.
    settings.STORAGE_DIRECT_IO = False
    chunkstore.write_chunk(direct_place, 2, filled(buffers, "sealed", data))
    assert cached_bytes(chunkstore.chunk_path(direct_place, 2)) >= size - chunkstore.BLOCK


def test_only_aligned_writable_buffers_are_written_directly(direct_place, settings):
    data = os.urandom(3 * chunkstore.BLOCK + 5)
    buffers = chunkstore.ChunkBuffers()
    aligned = filled(buffers, "a", data)
    folder = chunkstore.chunk_path(direct_place, 0).parent
    cases = {
        "aligned": (aligned, 3 * chunkstore.BLOCK),
        "shifted": (memoryview(bytearray(b"x" + data))[1:], 0),  # not on a block boundary
        "read-only": (data, 0),
        "shorter than a block": (aligned[:100], 0),
    }
    for name, (view, direct) in cases.items():
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            assert chunkstore._write_direct(fd, memoryview(view).cast("B")) == direct, name
        finally:
            os.close(fd)
        path.unlink()
        chunkstore.write_file(path, view, durable=True)
        assert path.read_bytes() == bytes(view), name


def test_a_file_system_refusing_direct_io_gets_the_page_cache(place, monkeypatch):
    """tmpfs before Linux 6.6 and some network file systems refuse O_DIRECT with EINVAL."""
    if not chunkstore.O_DIRECT:
        pytest.skip("no O_DIRECT here")
    real = chunkstore.fcntl.fcntl
    refused = []

    def fcntl(fd, command, arg=0):
        if command == chunkstore.fcntl.F_SETFL and arg & chunkstore.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, command, arg)

    monkeypatch.setattr(chunkstore.fcntl, "fcntl", fcntl)
    data = os.urandom(2 * chunkstore.BLOCK + 7)
    buffers = chunkstore.ChunkBuffers()
    chunkstore.write_chunk(place, 0, filled(buffers, "sealed", data))
    got = chunkstore.read_chunk_into(place, 0, None, buffers.get("stored", len(data) + 1))
    assert bytes(got) == data
    assert len(refused) == 2  # asked for the write and for the read, and refused both times


def test_a_direct_read_shows_a_file_longer_than_recorded(direct_place):
    recorded = 2 * chunkstore.BLOCK + 16
    path = chunkstore.chunk_path(direct_place, 0)
    path.write_bytes(os.urandom(recorded + 3 * chunkstore.BLOCK))  # damaged: longer
    got = chunkstore.read_chunk_into(direct_place, 0, None, chunkstore.ChunkBuffers().get("s", recorded + 1))
    assert len(got) == recorded + 1
    path.write_bytes(os.urandom(recorded - 1))  # damaged: shorter
    got = chunkstore.read_chunk_into(direct_place, 0, None, chunkstore.ChunkBuffers().get("s", recorded + 1))
    assert len(got) == recorded - 1


def test_a_failed_write_leaves_no_temporary_file(place, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(chunkstore.os, "write", full)
    with pytest.raises(OSError, match="No space"):
        chunkstore.write_chunk(place, 0, b"ciphertext")
    assert list(chunkstore.chunk_path(place, 0).parent.iterdir()) == []


def test_lent_buffers_are_kept_up_to_their_limit_and_lent_to_one_thread_at_a_time():
    pool = chunkstore.KeptBuffers(keep_bytes=2 * 8192, make=chunkstore.aligned_buffer)
    with pool.lend(5000) as first:
        assert len(first) == 5000
        with pool.lend(5000) as second:
            assert first.obj is not second.obj
        with pool.lend(3000) as third:
            assert third.obj is second.obj  # given back, and lent again
    with pool.lend(20000) as big:
        pass
    assert big.obj not in pool._free  # more than may be kept

    seen: list[int] = []
    lock = threading.Lock()

    def use():
        for _ in range(200):
            with pool.lend(4096) as view:
                with lock:
                    assert id(view.obj) not in seen
                    seen.append(id(view.obj))
                with lock:
                    seen.remove(id(view.obj))

    workers = [threading.Thread(target=use) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(pool._free) <= 4
