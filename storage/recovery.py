"""The recovery file: everything needed to decrypt a dataset offline with a root private key.

Beside a dataset's chunk files (`chunks/000000.bin`, ...) lies `recovery.json`, a versioned JSON
document (described field by field in docs/recovery-file.md) with the chunk table and the data key
wrapped for every root key. With it, the chunk files and one root private key, `recover_dataset`
(or `python -m storage.cli recover`) rebuilds the original file with no database and no server.

Like `storage.crypto`, this module must not import Django: the offline CLI imports it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric import rsa

from storage.crypto import (
    DATA_KEY_BYTES,
    DEFAULT_CHUNK_SIZE,
    NONCE_BYTES,
    TAG_BYTES,
    WRAPPED_KEY_BYTES,
    ChunkIntegrityError,
    CryptoError,
    KeyUnwrapError,
    check_chunk_size,
    chunk_hash,
    dataset_hash,
    decrypt_chunk,
    encrypt_chunk,
    hkdf_sha256,
    iter_chunks,
    key_fingerprint,
    public_key_fingerprint,
    unwrap_key,
    wrap_key,
)

__all__ = [
    "ALGORITHMS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "RECOVERY_FILE_NAME",
    "ChunkRecord",
    "RecoveryError",
    "RecoveryFormatError",
    "RecoveryKeyError",
    "RecoveryResult",
    "build_recovery_document",
    "chunk_file_name",
    "encrypt_file_to_directory",
    "read_recovery_file",
    "recover_dataset",
    "recovery_authenticator",
    "validate_recovery_document",
    "write_recovery_file",
]

FORMAT_NAME = "rdp-dataset-recovery"
FORMAT_VERSION = 1
RECOVERY_FILE_NAME = "recovery.json"
# Fixed for format version 1; recorded in every document so that it explains itself.
ALGORITHMS = {
    "chunk_cipher": "AES-256-GCM",
    "chunk_aad": "rdp-chunk-v1",
    "key_wrap": "RSA-OAEP-SHA256",
    "hash": "SHA-256",
    "authenticator": "HMAC-SHA256",
}
_AUTHENTICATOR_INFO = b"rdp-recovery-authenticator-v1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class RecoveryError(CryptoError):
    """Recovery cannot go on: a missing chunk file, an unwrap failure, a hash mismatch."""


class RecoveryFormatError(RecoveryError, ValueError):
    """The recovery document is not valid JSON or not a valid version-1 recovery document."""


class RecoveryKeyError(RecoveryError):
    """The private key given is not one of the dataset's root keys, or does not unwrap its key."""


@dataclass(frozen=True)
class ChunkRecord:
    """One row of the chunk table: what the server records for each encrypted chunk."""

    index: int
    nonce: bytes
    plaintext_sha256: bytes
    plaintext_size: int
    ciphertext_size: int
    file: str

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "file": self.file,
            "nonce": base64.b64encode(self.nonce).decode("ascii"),
            "plaintext_sha256": self.plaintext_sha256.hex(),
            "plaintext_size": self.plaintext_size,
            "ciphertext_size": self.ciphertext_size,
        }


@dataclass(frozen=True)
class RecoveryResult:
    """What `recover_dataset` verified and wrote."""

    dataset_id: str
    file_name: str
    size: int
    chunks: int
    dataset_hash: str


def chunk_file_name(index: int) -> str:
    """The relative file name of chunk `index`: `chunks/000000.bin` (more digits past 999,999)."""
    return f"chunks/{index:06d}.bin"


def _utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def recovery_authenticator(document: Mapping[str, Any], data_key: bytes) -> str:
    """HMAC-SHA256 of the document under a key derived from the data key; lowercase hex.

    Covers every field but `wrapped_keys` and `authenticator` itself, serialised as canonical JSON
    (sorted keys, separators "," and ":", ASCII escapes). The HMAC key is HKDF-SHA256 of the data
    key with info b"rdp-recovery-authenticator-v1". Whoever holds the data key can thus tell that
    the chunk table, sizes and hashes are the ones written with it; wraps for further root keys can
    be added without touching the authenticator.
    """
    covered = {
        name: value for name, value in document.items() if name not in ("wrapped_keys", "authenticator")
    }
    canonical = json.dumps(covered, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return hmac.new(hkdf_sha256(bytes(data_key), _AUTHENTICATOR_INFO), canonical, hashlib.sha256).hexdigest()


def build_recovery_document(
    *,
    dataset_id: str,
    dataset_name: str,
    file_name: str,
    chunk_size: int,
    chunks: Iterable[ChunkRecord],
    data_key: bytes,
    root_public_keys: Iterable[rsa.RSAPublicKey] = (),
    wrapped_keys: Mapping[str, bytes] | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """A version-1 recovery document (a JSON-ready dict), validated before it is returned.

    The data key is wrapped for each of `root_public_keys`; `wrapped_keys` (root key fingerprint
    → wrapped key) adds wraps made elsewhere. At least one wrap is required: without a root key
    the document recovers nothing. Size, dataset hash and key fingerprint are computed here.
    """
    rows = sorted(chunks, key=lambda row: row.index)
    wraps: dict[str, bytes] = dict(wrapped_keys or {})
    for public_key in root_public_keys:
        wraps[public_key_fingerprint(public_key)] = wrap_key(public_key, data_key)
    document: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "created_at": created_at or _utc_now(),
        "algorithms": dict(ALGORITHMS),
        "dataset_id": dataset_id,
        "dataset_name": dataset_name,
        "file_name": file_name,
        "size": sum(row.plaintext_size for row in rows),
        "chunk_size": chunk_size,
        "chunk_count": len(rows),
        "dataset_hash": dataset_hash(row.plaintext_sha256 for row in rows),
        "key_fingerprint": key_fingerprint(data_key),
        "chunks": [row.as_json() for row in rows],
        "wrapped_keys": [
            {"root_key_fingerprint": fingerprint, "wrapped_key": base64.b64encode(wrapped).decode("ascii")}
            for fingerprint, wrapped in sorted(wraps.items())
        ],
    }
    document["authenticator"] = recovery_authenticator(document, data_key)
    validate_recovery_document(document)
    return document


def _fail(source: str, message: str) -> RecoveryFormatError:
    return RecoveryFormatError(f"{source}: {message}" if source else message)


def _b64(value: Any, where: str, length: int, source: str) -> bytes:
    if not isinstance(value, str):
        raise _fail(source, f"{where} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(source, f"{where} is not valid base64") from None
    if len(raw) != length:
        raise _fail(source, f"{where} must decode to {length} bytes, not {len(raw)}")
    return raw


def _int(value: Any, where: str, source: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(source, f"{where} must be an integer of at least {minimum}")
    return value


def _str(value: Any, where: str, source: str) -> str:
    if not isinstance(value, str):
        raise _fail(source, f"{where} must be a string")
    return value


def _hex64(value: Any, where: str, source: str) -> str:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise _fail(source, f"{where} must be 64 lowercase hexadecimal digits")
    return value


def _safe_relative(value: Any, where: str, source: str) -> str:
    text = _str(value, where, source)
    path = PurePosixPath(text)
    if not text or path.is_absolute() or ".." in path.parts or "\\" in text or text != str(path):
        raise _fail(source, f"{where} must be a plain relative path inside the dataset directory")
    return text


def validate_recovery_document(document: Any, *, source: str = "") -> dict[str, Any]:
    """Check every field of a version-1 document; `RecoveryFormatError` naming the first problem.

    Checks types and formats, that chunk indices run 0..n-1 with unique files, that every chunk
    but the last is exactly `chunk_size` long, that sizes add up, and that `dataset_hash` is the
    hash of the chunk table. It cannot check the authenticator, which needs the data key.
    """
    if not isinstance(document, dict):
        raise _fail(source, "the recovery document must be a JSON object")
    if document.get("format") != FORMAT_NAME:
        raise _fail(source, f"not a recovery document (format must be {FORMAT_NAME!r})")
    version = document.get("version")
    if version != FORMAT_VERSION:
        raise _fail(source, f"unsupported recovery format version {version!r} (this software reads 1)")
    required = (
        "created_at algorithms dataset_id dataset_name file_name size chunk_size chunk_count "
        "dataset_hash key_fingerprint chunks wrapped_keys authenticator"
    ).split()
    missing = [name for name in required if name not in document]
    if missing:
        raise _fail(source, f"missing field(s): {', '.join(missing)}")
    if document["algorithms"] != ALGORITHMS:
        raise _fail(source, f"algorithms must be {ALGORITHMS} in version 1")
    _str(document["created_at"], "created_at", source)
    if not _str(document["dataset_id"], "dataset_id", source):
        raise _fail(source, "dataset_id must not be empty")
    _str(document["dataset_name"], "dataset_name", source)
    _str(document["file_name"], "file_name", source)
    size = _int(document["size"], "size", source)
    chunk_size = _int(document["chunk_size"], "chunk_size", source, minimum=1)
    try:
        check_chunk_size(chunk_size)
    except ValueError as exc:
        raise _fail(source, str(exc)) from None
    _hex64(document["dataset_hash"], "dataset_hash", source)
    _hex64(document["key_fingerprint"], "key_fingerprint", source)
    _hex64(document["authenticator"], "authenticator", source)

    chunks = document["chunks"]
    if not isinstance(chunks, list):
        raise _fail(source, "chunks must be a list")
    if _int(document["chunk_count"], "chunk_count", source) != len(chunks):
        raise _fail(
            source, f"chunk_count is {document['chunk_count']} but the table has {len(chunks)} chunks"
        )
    files: set[str] = set()
    total = 0
    digests: list[str] = []
    for position, row in enumerate(chunks):
        where = f"chunks[{position}]"
        if not isinstance(row, dict):
            raise _fail(source, f"{where} must be an object")
        if _int(row.get("index"), f"{where}.index", source) != position:
            raise _fail(source, f"{where}.index is {row['index']}; chunks must be listed in order from 0")
        name = _safe_relative(row.get("file"), f"{where}.file", source)
        if name in files:
            raise _fail(source, f"{where}.file {name!r} is used by two chunks")
        files.add(name)
        _b64(row.get("nonce"), f"{where}.nonce", NONCE_BYTES, source)
        digests.append(_hex64(row.get("plaintext_sha256"), f"{where}.plaintext_sha256", source))
        # An empty file is one empty chunk; otherwise no chunk is empty.
        plain = _int(
            row.get("plaintext_size"), f"{where}.plaintext_size", source, minimum=0 if len(chunks) == 1 else 1
        )
        is_last = position == len(chunks) - 1
        if plain > chunk_size or (not is_last and plain != chunk_size):
            raise _fail(source, f"{where}.plaintext_size {plain} does not fit chunk_size {chunk_size}")
        if _int(row.get("ciphertext_size"), f"{where}.ciphertext_size", source) != plain + TAG_BYTES:
            raise _fail(source, f"{where}.ciphertext_size must be plaintext_size + {TAG_BYTES}")
        total += plain
    if total != size:
        raise _fail(source, f"size is {size} but the chunks add up to {total} bytes")
    if dataset_hash(digests) != document["dataset_hash"]:
        raise _fail(source, "dataset_hash is not the hash of the chunk table's plaintext_sha256 values")

    wraps = document["wrapped_keys"]
    if not isinstance(wraps, list) or not wraps:
        raise _fail(source, "wrapped_keys must be a non-empty list (no root key, no recovery)")
    seen: set[str] = set()
    for position, wrap in enumerate(wraps):
        where = f"wrapped_keys[{position}]"
        if not isinstance(wrap, dict):
            raise _fail(source, f"{where} must be an object")
        fingerprint = _hex64(wrap.get("root_key_fingerprint"), f"{where}.root_key_fingerprint", source)
        if fingerprint in seen:
            raise _fail(source, f"{where}: root key {fingerprint} is listed twice")
        seen.add(fingerprint)
        _b64(wrap.get("wrapped_key"), f"{where}.wrapped_key", WRAPPED_KEY_BYTES, source)
    return document


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(target: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename over the target, fsync the directory."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def write_recovery_file(directory: str | os.PathLike[str], document: Mapping[str, Any]) -> Path:
    """Validate `document` and write it atomically as `<directory>/recovery.json`; returns the path."""
    validate_recovery_document(dict(document))
    target = Path(directory) / RECOVERY_FILE_NAME
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    _write_atomically(target, text.encode("utf-8"))
    return target


def read_recovery_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a recovery file; `RecoveryFormatError` naming the file and the problem."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RecoveryError(f"{source}: cannot read the recovery file ({exc.strerror or exc})") from None
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _fail(source, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _fail(source, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return validate_recovery_document(document, source=source)


def _unwrap_for(document: Mapping[str, Any], root_private_key: rsa.RSAPrivateKey, source: str) -> bytes:
    fingerprint = public_key_fingerprint(root_private_key.public_key())
    for wrap in document["wrapped_keys"]:
        if wrap["root_key_fingerprint"] == fingerprint:
            break
    else:
        known = ", ".join(w["root_key_fingerprint"] for w in document["wrapped_keys"])
        raise RecoveryKeyError(
            f"{source}: the dataset's key is not wrapped for this private key (public key fingerprint "
            f"{fingerprint}); it is wrapped for the root key(s) {known}"
        )
    try:
        data_key = unwrap_key(root_private_key, base64.b64decode(wrap["wrapped_key"]))
    except KeyUnwrapError as exc:
        raise RecoveryKeyError(f"{source}: {exc}") from None
    if key_fingerprint(data_key) != document["key_fingerprint"]:
        raise RecoveryKeyError(f"{source}: the unwrapped key does not match the document's key_fingerprint")
    if not hmac.compare_digest(recovery_authenticator(document, data_key), document["authenticator"]):
        raise RecoveryFormatError(
            f"{source}: the authenticator does not match: the document was altered after it was written"
        )
    return data_key


def _read_chunk_file(path: Path, expected_size: int, index: int, name: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(expected_size + 1)
    except FileNotFoundError:
        raise RecoveryError(f"chunk {index} ({name}): the chunk file is missing") from None
    except OSError as exc:
        raise RecoveryError(f"chunk {index} ({name}): cannot read it ({exc.strerror or exc})") from None
    if len(data) != expected_size:
        actual = "longer than" if len(data) > expected_size else f"{len(data)} bytes, not"
        raise ChunkIntegrityError(
            index,
            f"chunk {index} ({name}): the file is {actual} the recorded {expected_size} bytes",
            file=name,
        )
    return data


def recover_dataset(
    recovery_path: str | os.PathLike[str], root_private_key: rsa.RSAPrivateKey, output: IO[bytes]
) -> RecoveryResult:
    """Decrypt a dataset offline: unwrap its key with a root private key, verify and stream it.

    Finds the wrap made for `root_private_key` (by public key fingerprint), unwraps the data key,
    checks it against `key_fingerprint` and the document's authenticator, then decrypts the chunk
    files (paths relative to the recovery file's directory) in order, checking each one's size,
    GCM tag and SHA-256, writes each chunk's plaintext to `output` as soon as it verifies, and
    finally checks the dataset hash. Any mismatch raises an error naming the chunk; `output` then
    holds only a verified prefix and should be discarded (the CLI deletes its partial file).
    """
    path = Path(recovery_path)
    source = str(path)
    document = read_recovery_file(path)
    data_key = _unwrap_for(document, root_private_key, source)
    base = path.parent
    dataset_id = document["dataset_id"]
    digests: list[bytes] = []
    for row in document["chunks"]:
        index, name = row["index"], row["file"]
        ciphertext = _read_chunk_file(base / name, row["ciphertext_size"], index, name)
        try:
            plaintext = decrypt_chunk(data_key, dataset_id, index, base64.b64decode(row["nonce"]), ciphertext)
        except ChunkIntegrityError:
            raise ChunkIntegrityError(
                index,
                f"chunk {index} ({name}) failed authentication: the file was altered or belongs to "
                "another position or dataset",
                file=name,
            ) from None
        digest = chunk_hash(plaintext)
        if digest.hex() != row["plaintext_sha256"] or len(plaintext) != row["plaintext_size"]:
            raise ChunkIntegrityError(
                index, f"chunk {index} ({name}): the plaintext does not match its recorded SHA-256", file=name
            )
        output.write(plaintext)
        digests.append(digest)
    result_hash = dataset_hash(digests)
    if result_hash != document["dataset_hash"]:
        raise RecoveryError(f"{source}: the dataset hash of the recovered data does not match")
    return RecoveryResult(
        dataset_id=dataset_id,
        file_name=document["file_name"],
        size=document["size"],
        chunks=len(digests),
        dataset_hash=result_hash,
    )


def encrypt_file_to_directory(
    path: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    dataset_id: str,
    data_key: bytes,
    root_public_keys: Iterable[rsa.RSAPublicKey],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    dataset_name: str = "",
    file_name: str | None = None,
) -> dict[str, Any]:
    """Reference writer: encrypt a file into `directory` as chunk files plus `recovery.json`.

    Each chunk file (`chunks/000000.bin`, ...) holds the chunk's ciphertext and tag, written
    atomically; the recovery file is written last, so a directory with a recovery file is complete.
    Refuses a directory that already has a recovery file. Returns the recovery document.
    """
    if len(data_key) != DATA_KEY_BYTES:
        raise ValueError(f"a data key is {DATA_KEY_BYTES} bytes")
    check_chunk_size(chunk_size)
    # Wrapped first: a missing or unacceptable root key fails before any chunk is written.
    wraps = {public_key_fingerprint(key): wrap_key(key, data_key) for key in root_public_keys}
    if not wraps:
        raise ValueError(
            "at least one root public key is needed: without one nothing can recover the dataset"
        )
    target = Path(directory)
    if (target / RECOVERY_FILE_NAME).exists():
        raise FileExistsError(f"{target / RECOVERY_FILE_NAME} exists; refusing to overwrite a dataset")
    rows: list[ChunkRecord] = []
    with open(path, "rb") as handle:
        for index, plaintext in enumerate(iter_chunks(handle, chunk_size)):
            nonce, ciphertext = encrypt_chunk(data_key, dataset_id, index, plaintext)
            name = chunk_file_name(index)
            _write_atomically(target / name, ciphertext)
            rows.append(
                ChunkRecord(
                    index=index,
                    nonce=nonce,
                    plaintext_sha256=chunk_hash(plaintext),
                    plaintext_size=len(plaintext),
                    ciphertext_size=len(ciphertext),
                    file=name,
                )
            )
    document = build_recovery_document(
        dataset_id=dataset_id,
        dataset_name=dataset_name,
        file_name=file_name if file_name is not None else Path(path).name,
        chunk_size=chunk_size,
        chunks=rows,
        data_key=data_key,
        wrapped_keys=wraps,
    )
    write_recovery_file(target, document)
    return document
