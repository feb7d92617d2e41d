"""Server-side decrypted downloads: plaintext streamed chunk by chunk, every GCM tag checked.

The client sends the data key (it unwrapped it with its private key) over TLS for this request
only; it is checked by fingerprint and never stored. A chunk that fails its tag or size
stops the stream with an error naming the chunk: corrupted bytes are never served.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

from storage import crypto
from storage.models import Chunk, Dataset, DatasetState
from storage.services import chunkstore
from storage.services.access import check_key
from storage.services.errors import ConflictError, StorageError

log = logging.getLogger(__name__)

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class IntegrityFailureError(StorageError):
    """A stored chunk failed its check (tag, size or hash): the data on the server is damaged."""

    status = 500
    code = "integrity_error"

    def __init__(self, dataset: Dataset, index: int, why: str):
        super().__init__(
            f"Chunk {index} of {dataset.mnemonic} failed its integrity check ({why}); the download was "
            "stopped and no damaged bytes were sent. Report this to the operators."
        )
        self.index = index


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One `bytes=a-b` range of a file of `size` bytes; None serves the whole file (absent, or a
    form not handled here such as several ranges); `StorageError(status=416)` if unsatisfiable."""
    if not header:
        return None
    match = RANGE.match(header.strip().replace(" ", ""))
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise StorageError("The requested range is not satisfiable.", code="range", status=416)
        return ByteRange(max(0, size - length), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise StorageError("The requested range is not satisfiable.", code="range", status=416)
    return ByteRange(start, end)


def readable(dataset: Dataset) -> None:
    if dataset.state != DatasetState.AVAILABLE:
        state = dataset.get_state_display().lower()
        raise ConflictError(f"{dataset.mnemonic} is {state}; it cannot be read now.")


def decrypt_stored_chunk(
    dataset: Dataset,
    chunk: Chunk,
    key: bytes,
    *,
    check_hash: bool = True,
    buffers: chunkstore.ChunkBuffers | None = None,
    streaming: bool = False,
) -> bytes | memoryview:
    """Read, authenticate and hash-check one stored chunk; `IntegrityFailureError` naming it otherwise.

    The GCM tag alone proves the chunk is the one encrypted for this dataset and position under
    this key; `check_hash` also compares the plaintext with the SHA-256 recorded at upload (re-key
    and scrub do; downloads rely on the tag, and clients check the dataset hash end to end).
    With `buffers`, the chunk is read and decrypted into them and the plaintext is a view of
    them, valid until the next chunk; without, the plaintext is a new object. `streaming`: see
    `chunkstore.read_chunk_into`."""
    if buffers is None:  # the file read into a lent buffer
        with chunkstore.lent.lend(chunk.stored_size + 1) as stored:
            return _decrypt_stored(dataset, chunk, key, check_hash, stored, None, streaming)
    stored = buffers.get("stored", chunk.stored_size + 1)
    return _decrypt_stored(dataset, chunk, key, check_hash, stored, buffers, streaming)


def _decrypt_stored(dataset, chunk, key, check_hash, stored, buffers, streaming) -> bytes | memoryview:
    """`decrypt_stored_chunk`, its file read into `stored` (one byte more than the recorded size:
    a longer file shows)."""
    try:
        ciphertext = chunkstore.read_chunk_into(
            dataset, chunk.index, chunk.generation, stored, streaming=streaming
        )
    except FileNotFoundError:
        raise IntegrityFailureError(dataset, chunk.index, "its file is missing") from None
    if len(ciphertext) != chunk.stored_size:
        raise IntegrityFailureError(
            dataset, chunk.index, f"{len(ciphertext)} bytes stored, {chunk.stored_size} recorded"
        )
    nonce = bytes(chunk.nonce)
    try:
        if buffers is None or len(ciphertext) - crypto.TAG_BYTES != chunk.size:
            plaintext = crypto.decrypt_chunk(key, dataset.mnemonic, chunk.index, nonce, ciphertext)
        else:
            plaintext = buffers.get("plain", chunk.size)
            crypto.decrypt_chunk_into(key, dataset.mnemonic, chunk.index, nonce, ciphertext, plaintext)
    except crypto.ChunkIntegrityError:
        raise IntegrityFailureError(dataset, chunk.index, "authentication failed: altered or moved") from None
    if len(plaintext) != chunk.size or (check_hash and hashlib.sha256(plaintext).hexdigest() != chunk.sha256):
        raise IntegrityFailureError(dataset, chunk.index, "its content does not match its recorded SHA-256")
    return plaintext


def plaintext(dataset: Dataset, key: bytes, byte_range: ByteRange | None = None) -> Iterator[bytes]:
    """The decrypted bytes of `dataset` (or of `byte_range`), chunk by chunk, each verified first.

    The first chunk is decrypted before the iterator is returned, so a wrong state, a damaged
    first chunk or a missing file is an error before any response starts.
    """
    readable(dataset)
    check_key(dataset, key)
    if dataset.size == 0:
        return iter(())
    start, end = (byte_range.start, byte_range.end) if byte_range else (0, dataset.size - 1)
    first, last = start // dataset.chunk_size, end // dataset.chunk_size
    chunks = list(
        Chunk.objects.filter(
            dataset=dataset, generation=dataset.generation, index__gte=first, index__lte=last
        )
        .order_by("index")
        .defer("created_at")
    )
    if [c.index for c in chunks] != list(range(first, last + 1)):
        raise IntegrityFailureError(dataset, first, "chunks are missing from the chunk table")

    def read(position: int) -> bytes:
        """Chunk `position` decrypted, once the disk was asked for the next one."""
        if position + 1 < len(chunks):
            chunkstore.read_ahead(dataset, chunks[position + 1].index, chunks[position + 1].generation)
        return decrypt_stored_chunk(dataset, chunks[position], key, check_hash=False, streaming=True)

    head = read(0)

    def pieces() -> Iterator[bytes]:
        for position, chunk in enumerate(chunks):
            data = head if position == 0 else read(position)
            offset = chunk.index * dataset.chunk_size
            lo, hi = max(start - offset, 0), min(end - offset + 1, len(data))
            yield data[lo:hi] if (lo, hi) != (0, len(data)) else data

    return pieces()
