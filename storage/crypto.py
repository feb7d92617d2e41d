"""The cryptography of encrypted datasets, as pure functions over bytes.

- Every dataset has its own random 256-bit *data key* (`new_data_key`). The server stores it only
  wrapped with RSA-OAEP (`wrap_key`) for each user allowed to read the dataset and for each
  operator *root key*, plus its fingerprint (`key_fingerprint`) to recognise the right key.
- A dataset's file is cut into chunks (`DEFAULT_CHUNK_SIZE`, the last one shorter). Each chunk is
  encrypted with AES-256-GCM under a fresh random 96-bit nonce, with the dataset id and the chunk's
  index as associated data (`chunk_aad`), so a chunk cannot be moved to another position or
  dataset without failing authentication (`decrypt_chunk` raises `ChunkIntegrityError`).
- The dataset hash is SHA-256 over the raw 32-byte SHA-256 digests of the plaintext chunks, in
  order (`dataset_hash`, `hash_file`); the CLI's offline `hash` prints the same value.
- Users keep their RSA private keys; `compact_private_key_text` turns one into a short text for a
  QR code, `load_private_key` reads it back (and PEM and JWK).
- Secrets in flight (upload keys, keys handed to Celery workers) are only ever passed *sealed*
  (`seal`/`unseal`): AES-256-GCM under a key derived from the server secret and a purpose, with an
  authenticated expiry.

This module must not import Django at module level: the offline CLI (`python -m storage.cli`)
imports it with no settings and no database. Only `sealing_secret()` reads Django settings.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import math
import os
import struct
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa, x448, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "CHUNK_AAD_CONTEXT",
    "COMPACT_KEY_PREFIX",
    "COMPACT_KEY_VERSION",
    "DATA_KEY_BYTES",
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "NONCE_BYTES",
    "RSA_KEY_BITS",
    "TAG_BYTES",
    "WRAPPED_KEY_BYTES",
    "ChunkIntegrityError",
    "CryptoError",
    "KeyFormatError",
    "KeyPasswordRequiredError",
    "KeyUnwrapError",
    "SealError",
    "SealExpiredError",
    "check_chunk_size",
    "chunk_aad",
    "chunk_hash",
    "compact_private_key",
    "compact_private_key_text",
    "dataset_hash",
    "decrypt_chunk",
    "decrypt_chunk_into",
    "encrypt_chunk",
    "encrypt_chunk_into",
    "generate_private_key",
    "hash_file",
    "hkdf_sha256",
    "iter_chunks",
    "key_fingerprint",
    "load_private_key",
    "load_public_key",
    "new_data_key",
    "private_key_from_compact",
    "private_key_from_compact_text",
    "private_key_pem",
    "public_key_fingerprint",
    "public_key_jwk",
    "public_key_pem",
    "seal",
    "sealing_secret",
    "unseal",
    "unwrap_key",
    "wrap_key",
]

DATA_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
DEFAULT_CHUNK_SIZE = 2 * 1024 * 1024
# Chunks are held in memory whole (to encrypt, decrypt and hash them); keep them modest.
MAX_CHUNK_SIZE = 64 * 1024 * 1024
RSA_KEY_BITS = 4096
WRAPPED_KEY_BYTES = RSA_KEY_BITS // 8

# Associated data of a chunk: CHUNK_AAD_CONTEXT, u32 length of the UTF-8 dataset id, the id,
# u64 chunk index (big-endian). See `chunk_aad`.
CHUNK_AAD_CONTEXT = b"rdp-chunk-v1\x00"

COMPACT_KEY_VERSION = 1
COMPACT_KEY_PREFIX = f"RDPK{COMPACT_KEY_VERSION}:"
_COMPACT_CHECKSUM_BYTES = 4

_SEAL_VERSION = 1
_SEAL_TOKEN_PREFIX = f"s{_SEAL_VERSION}."
_SEAL_HEADER = struct.Struct(">BQ")  # version, expiry (Unix seconds)
_SEAL_INFO = b"rdp-seal-v1\x00"
_SEALING_SECRET_MIN_BYTES = 32


def _oaep() -> padding.OAEP:
    # The parameters of Web Crypto's {name: "RSA-OAEP", hash: "SHA-256"}: MGF1 uses the same hash,
    # and the label is empty.
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


# --- errors ---------------------------------------------------------------------------------------


class CryptoError(Exception):
    """Base class of every error this module (and `storage.recovery`) raises on purpose."""


class KeyFormatError(CryptoError, ValueError):
    """A key could not be read, or it is not a key the portal accepts (RSA, 4096 bits)."""


class KeyPasswordRequiredError(KeyFormatError):
    """The private key is encrypted and no password was given."""


class KeyUnwrapError(CryptoError):
    """A wrapped data key could not be unwrapped with the given private key."""


class ChunkIntegrityError(CryptoError):
    """A chunk failed its check: authentication tag, size or SHA-256.

    `index` is the chunk's position in the dataset; `file` the chunk file, when one is known.
    """

    def __init__(self, index: int, message: str, *, file: str | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.file = file


class SealError(CryptoError):
    """A sealed token is malformed, was altered, or was sealed for another purpose or secret."""


class SealExpiredError(SealError):
    """A sealed token is authentic but its time is over."""


# --- data keys and chunks -------------------------------------------------------------------------


def new_data_key() -> bytes:
    """A fresh random AES-256 data key (32 bytes from the operating system's CSPRNG)."""
    return os.urandom(DATA_KEY_BYTES)


def key_fingerprint(key: bytes) -> str:
    """The fingerprint of a data key: lowercase hex SHA-256 of its 32 raw bytes.

    This is the value the server stores beside a dataset and checks whenever a client presents or
    unwraps a key, so a wrong key is refused before anything is decrypted. It reveals nothing
    useful about a random 256-bit key. In a browser: `crypto.subtle.digest("SHA-256", rawKey)`.
    """
    _check_data_key(key)
    return hashlib.sha256(key).hexdigest()


def _check_data_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != DATA_KEY_BYTES:
        raise ValueError(f"a data key is {DATA_KEY_BYTES} bytes")


def check_chunk_size(chunk_size: int) -> int:
    """`chunk_size` if it is a usable chunk size (1 byte to `MAX_CHUNK_SIZE`), else ValueError."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise ValueError("the chunk size must be an integer")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"the chunk size must be between 1 byte and {MAX_CHUNK_SIZE} bytes")
    return chunk_size


def chunk_aad(dataset_id: str, index: int) -> bytes:
    """The associated data that binds a chunk to its dataset and position.

    Encoding (unambiguous, fixed-width where it matters)::

        b"rdp-chunk-v1\\x00"                      13 bytes: context and version
        len(dataset_id as UTF-8)                  4 bytes, unsigned big-endian
        dataset_id as UTF-8
        index                                     8 bytes, unsigned big-endian

    AES-GCM authenticates it with the chunk, so a chunk moved to another index (swapped or
    replayed) or into another dataset fails authentication.
    """
    if not isinstance(dataset_id, str) or not dataset_id:
        raise ValueError("the dataset id must be a non-empty string")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 2**64:
        raise ValueError("the chunk index must be an integer from 0 to 2**64 - 1")
    encoded = dataset_id.encode("utf-8")
    return CHUNK_AAD_CONTEXT + struct.pack(">I", len(encoded)) + encoded + struct.pack(">Q", index)


def encrypt_chunk(key: bytes, dataset_id: str, index: int, plaintext: bytes) -> tuple[bytes, bytes]:
    """Encrypt one chunk with AES-256-GCM; returns `(nonce, ciphertext_with_tag)`.

    The nonce is 12 fresh random bytes (random nonces are safe far beyond any dataset's chunk
    count under one key); the ciphertext is as long as the plaintext plus the 16-byte tag.
    """
    _check_data_key(key)
    aad = chunk_aad(dataset_id, index)
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(bytes(key)).encrypt(nonce, bytes(plaintext), aad)


def decrypt_chunk(key: bytes, dataset_id: str, index: int, nonce: bytes, ciphertext: bytes) -> bytes:
    """Decrypt and authenticate one chunk; `ChunkIntegrityError` if it does not verify.

    Authentication fails when the chunk was altered, belongs to another index or dataset, the
    nonce is not its own, or the key is wrong: AES-GCM cannot tell these apart.
    """
    _check_data_key(key)
    aad = chunk_aad(dataset_id, index)
    if len(nonce) != NONCE_BYTES:
        raise ChunkIntegrityError(index, f"chunk {index}: the nonce must be {NONCE_BYTES} bytes")
    if len(ciphertext) < TAG_BYTES:
        raise ChunkIntegrityError(index, f"chunk {index}: shorter than its {TAG_BYTES}-byte tag")
    try:
        return AESGCM(bytes(key)).decrypt(bytes(nonce), ciphertext, aad)
    except InvalidTag:
        raise _tag_failure(dataset_id, index) from None


def encrypt_chunk_into(key: bytes, dataset_id: str, index: int, plaintext, out: bytearray) -> bytes:
    """`encrypt_chunk` writing the ciphertext and tag into `out` (exactly `len(plaintext) + 16`
    bytes) instead of a new object; returns the nonce. For loops over many chunks that keep
    their buffers (no allocation per chunk)."""
    _check_data_key(key)
    nonce = os.urandom(NONCE_BYTES)
    AESGCM(bytes(key)).encrypt_into(nonce, plaintext, chunk_aad(dataset_id, index), out)
    return nonce


def decrypt_chunk_into(
    key: bytes, dataset_id: str, index: int, nonce: bytes, ciphertext, out: bytearray
) -> None:
    """`decrypt_chunk` writing the plaintext into `out` (exactly `len(ciphertext) - 16` bytes)."""
    _check_data_key(key)
    if len(nonce) != NONCE_BYTES or len(ciphertext) < TAG_BYTES:
        decrypt_chunk(key, dataset_id, index, nonce, ciphertext)  # raises its error
    try:
        AESGCM(bytes(key)).decrypt_into(bytes(nonce), ciphertext, chunk_aad(dataset_id, index), out)
    except InvalidTag:
        raise _tag_failure(dataset_id, index) from None


def _tag_failure(dataset_id: str, index: int) -> ChunkIntegrityError:
    return ChunkIntegrityError(
        index,
        f"chunk {index} of dataset {dataset_id!r} failed authentication: it was altered, "
        "belongs to another position or dataset, or the key is wrong",
    )


def chunk_hash(plaintext: bytes) -> bytes:
    """The raw 32-byte SHA-256 digest of a plaintext chunk."""
    return hashlib.sha256(plaintext).digest()


def dataset_hash(chunk_hashes: Iterable[bytes | str]) -> str:
    """The dataset hash: lowercase hex SHA-256 over the chunks' raw 32-byte digests, in order.

    Each digest is the SHA-256 of one plaintext chunk (hex strings are accepted too). A file of
    zero bytes is stored as one empty chunk (`hash_file` counts it so too). The value depends on
    the chunk size, which is therefore recorded with it.
    """
    outer = hashlib.sha256()
    for position, digest in enumerate(chunk_hashes):
        raw = bytes.fromhex(digest) if isinstance(digest, str) else bytes(digest)
        if len(raw) != 32:
            raise ValueError(f"chunk hash {position} is not a 32-byte SHA-256 digest")
        outer.update(raw)
    return outer.hexdigest()


def iter_chunks(fileobj: IO[bytes], chunk_size: int) -> Iterator[bytes]:
    """Read `fileobj` in chunks of exactly `chunk_size` bytes (the last one shorter, none empty).

    Short reads (pipes, sockets) are topped up, so the chunk boundaries depend only on the bytes.
    """
    check_chunk_size(chunk_size)
    while True:
        chunk = fileobj.read(chunk_size)
        if not chunk:
            return
        while len(chunk) < chunk_size:
            more = fileobj.read(chunk_size - len(chunk))
            if not more:
                break
            chunk += more
        yield chunk
        if len(chunk) < chunk_size:
            return


def hash_file(
    source: str | os.PathLike[str] | IO[bytes], chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[str, list[str]]:
    """Stream a file (path or binary file object); returns `(dataset_hash_hex, [chunk_hash_hex, ...])`.

    The same algorithm as the CLI's offline `hash` and as the server's record of an upload; an
    empty file is one empty chunk, as an upload stores it.
    """
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            return hash_file(handle, chunk_size)
    digests = [chunk_hash(chunk) for chunk in iter_chunks(source, chunk_size)] or [chunk_hash(b"")]
    return dataset_hash(digests), [digest.hex() for digest in digests]


# --- public keys ----------------------------------------------------------------------------------

_ACCEPTED_PUBLIC = (
    "a PEM public key ('-----BEGIN PUBLIC KEY-----'), an OpenSSH 'ssh-rsa AAAA...' line "
    "or a JWK (JSON with kty 'RSA', n and e)"
)


def _describe_key(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"an elliptic-curve key ({key.curve.name})"
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "an Ed25519 key"
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "an Ed448 key"
    if isinstance(key, x25519.X25519PublicKey | x25519.X25519PrivateKey | x448.X448PublicKey):
        return "an X25519/X448 key"
    if isinstance(key, dsa.DSAPublicKey | dsa.DSAPrivateKey):
        return "a DSA key"
    return f"a {type(key).__name__}"


def _require_bits(key_size: int) -> None:
    if key_size != RSA_KEY_BITS:
        raise KeyFormatError(
            f"This RSA key has {key_size} bits; the portal needs {RSA_KEY_BITS}-bit RSA keys."
        )


def _require_rsa_public(key: object) -> rsa.RSAPublicKey:
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFormatError(
            f"This is {_describe_key(key)}, not an RSA key; the portal needs a {RSA_KEY_BITS}-bit RSA key."
        )
    _require_bits(key.key_size)
    return key


def _require_rsa_private(key: object) -> rsa.RSAPrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFormatError(
            f"This is {_describe_key(key)}, not an RSA key; the portal needs a {RSA_KEY_BITS}-bit RSA key."
        )
    _require_bits(key.key_size)
    return key


def _as_text(data: str | bytes, what: str) -> str:
    if isinstance(data, bytes | bytearray):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise KeyFormatError(f"The {what} is not text; binary (DER) keys are not accepted.") from None
    if not isinstance(data, str):
        raise KeyFormatError(f"The {what} must be text, bytes or a JWK dictionary.")
    return data


def _jwk_from_text(text: str) -> Mapping[str, Any]:
    try:
        jwk = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFormatError(f"The key looks like JSON but is not valid JSON ({exc.msg}).") from None
    if not isinstance(jwk, dict):
        raise KeyFormatError("A JWK must be a JSON object.")
    return jwk


def _b64url_int(jwk: Mapping[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise KeyFormatError(f"The JWK has no '{name}'.")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"The JWK's '{name}' is not base64url.") from None
    number = int.from_bytes(raw, "big")
    if number <= 0:
        raise KeyFormatError(f"The JWK's '{name}' is zero.")
    return number


def _b64url(number: int) -> str:
    raw = number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _check_jwk_kty(jwk: Mapping[str, Any]) -> None:
    kty = jwk.get("kty")
    if kty != "RSA":
        kind = {"EC": "an elliptic-curve key", "OKP": "an Ed25519/X25519 key", "oct": "a symmetric key"}
        raise KeyFormatError(
            f"This JWK is {kind.get(kty, f'of type {kty!r}')} (kty {kty!r}), not an RSA key; "
            f"the portal needs a {RSA_KEY_BITS}-bit RSA key."
        )


def _public_key_from_jwk(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey:
    _check_jwk_kty(jwk)
    if "d" in jwk:
        raise KeyFormatError("This JWK contains a private key. Give only the public key (kty, n, e).")
    n, e = _b64url_int(jwk, "n"), _b64url_int(jwk, "e")
    _require_bits(n.bit_length())
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise KeyFormatError(f"The JWK is not a valid RSA public key ({exc}).") from None


def load_public_key(data: str | bytes | Mapping[str, Any]) -> rsa.RSAPublicKey:
    """Read a user's or root key's RSA public key; `KeyFormatError` with a clear message otherwise.

    Accepts PEM (SubjectPublicKeyInfo, and PKCS#1 'RSA PUBLIC KEY'), one OpenSSH `ssh-rsa` line
    and JWK (a dict or JSON text with kty 'RSA' and base64url n, e, e.g. Web Crypto's
    `exportKey("jwk", ...)`). Refuses private keys, keys that are not RSA, and RSA keys of any
    size other than 4096 bits.
    """
    if isinstance(data, Mapping):
        return _public_key_from_jwk(data)
    text = _as_text(data, "public key").strip()
    if not text:
        raise KeyFormatError(f"The public key is empty; expected {_ACCEPTED_PUBLIC}.")
    if text.startswith("{"):
        return _public_key_from_jwk(_jwk_from_text(text))
    if text.startswith("-----BEGIN"):
        if "PRIVATE KEY-----" in text.splitlines()[0]:
            raise KeyFormatError("This is a private key. Give only the public key; keep the private key.")
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
            raise KeyFormatError(
                "The PEM public key could not be read (damaged or not a public key)."
            ) from None
        return _require_rsa_public(key)
    first = text.split(maxsplit=1)[0]
    if first.startswith(("ssh-", "ecdsa-", "sk-")):
        try:
            key = serialization.load_ssh_public_key(" ".join(text.split()).encode("ascii"))
        except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
            raise KeyFormatError(f"The OpenSSH public key ({first}) could not be read.") from None
        return _require_rsa_public(key)
    raise KeyFormatError(f"Unrecognised public key format; expected {_ACCEPTED_PUBLIC}.")


def public_key_fingerprint(public_key: rsa.RSAPublicKey) -> str:
    """Lowercase hex SHA-256 over the key's DER SubjectPublicKeyInfo.

    In a browser: `crypto.subtle.digest("SHA-256", await crypto.subtle.exportKey("spki", key))`.
    """
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def public_key_pem(public_key: rsa.RSAPublicKey) -> str:
    """The key as PEM SubjectPublicKeyInfo ('-----BEGIN PUBLIC KEY-----')."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def public_key_jwk(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    """The key as a JWK that Web Crypto imports for `{name: "RSA-OAEP", hash: "SHA-256"}`."""
    numbers = public_key.public_numbers()
    return {"kty": "RSA", "alg": "RSA-OAEP-256", "n": _b64url(numbers.n), "e": _b64url(numbers.e)}


# --- wrapping data keys ---------------------------------------------------------------------------


def wrap_key(public_key: rsa.RSAPublicKey, data_key: bytes) -> bytes:
    """Encrypt a data key for one RSA public key: RSA-OAEP, SHA-256, MGF1-SHA-256, no label.

    These are exactly Web Crypto's `RSA-OAEP` parameters for a key imported with
    `hash: "SHA-256"`, so a browser's `crypto.subtle.wrapKey("raw", aesKey, rsaKey,
    {name: "RSA-OAEP"})` (or `encrypt` of the raw key) and this function are interchangeable,
    both ways. The result is 512 bytes for a 4096-bit key; OAEP is randomised.
    """
    _check_data_key(data_key)
    _require_rsa_public(public_key)
    return public_key.encrypt(bytes(data_key), _oaep())


def unwrap_key(private_key: rsa.RSAPrivateKey, wrapped: bytes) -> bytes:
    """Decrypt a wrapped data key (see `wrap_key`); `KeyUnwrapError` if it does not decrypt."""
    if len(wrapped) != private_key.key_size // 8:
        raise KeyUnwrapError(
            f"The wrapped key is {len(wrapped)} bytes; a key wrapped for this "
            f"{private_key.key_size}-bit key is {private_key.key_size // 8} bytes."
        )
    try:
        data_key = private_key.decrypt(bytes(wrapped), _oaep())
    except ValueError:
        raise KeyUnwrapError(
            "The data key could not be unwrapped: it was wrapped for another key pair, or it is damaged."
        ) from None
    if len(data_key) != DATA_KEY_BYTES:
        raise KeyUnwrapError(
            f"The unwrapped key is {len(data_key)} bytes, not a {DATA_KEY_BYTES}-byte data key."
        )
    return data_key


# --- private keys ---------------------------------------------------------------------------------


def generate_private_key() -> rsa.RSAPrivateKey:
    """A new 4096-bit RSA key pair with public exponent 65537."""
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)


def private_key_pem(private_key: rsa.RSAPrivateKey, password: bytes | None = None) -> str:
    """The key as PKCS#8 PEM, encrypted with `password` when one is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode("ascii")


def _int_field(number: int, width: int = 0) -> bytes:
    """2-byte length, then the number big-endian, left-padded with zeros to `width` bytes."""
    raw = number.to_bytes(max(width, (number.bit_length() + 7) // 8), "big")
    return struct.pack(">H", len(raw)) + raw


def _private_key_from_parts(e: int, p: int, q: int, d: int) -> rsa.RSAPrivateKey:
    """Rebuild a private key from e, p, q, d: recompute n, dp, dq, qi and check consistency."""
    if min(e, p, q, d) < 2 or p == q:
        raise KeyFormatError("The numbers do not form an RSA key.")
    n = p * q
    _require_bits(n.bit_length())
    carmichael = math.lcm(p - 1, q - 1)
    if d >= n or (d * e) % carmichael != 1:
        raise KeyFormatError("The numbers do not form an RSA key (d is not the inverse of e).")
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, n),
    )
    try:
        # OpenSSL checks the key (primality of p and q included) while loading it.
        return numbers.private_key()
    except ValueError as exc:
        raise KeyFormatError(f"The numbers do not form a valid RSA key ({exc}).") from None


def compact_private_key(private_key: rsa.RSAPrivateKey) -> bytes:
    """The key in the compact binary form, version 1 (1,040 bytes for a 4096-bit key, e = 65537).

    Layout: one version byte (1); then e, p, q, d, each as a 2-byte big-endian length followed by
    the number in big-endian bytes (p and q padded to half, d to the whole modulus length, so that
    every 4096-bit key has the same size; readers accept any length); then the first 4 bytes of
    the SHA-256 of everything before (catches typing and scanning mistakes). n, dp, dq and qi are
    recomputed on import (`private_key_from_compact`).
    """
    _require_rsa_private(private_key)
    numbers = private_key.private_numbers()
    modulus_bytes = private_key.key_size // 8
    body = (
        bytes([COMPACT_KEY_VERSION])
        + _int_field(numbers.public_numbers.e)
        + _int_field(numbers.p, modulus_bytes // 2)
        + _int_field(numbers.q, modulus_bytes // 2)
        + _int_field(numbers.d, modulus_bytes)
    )
    return body + hashlib.sha256(body).digest()[:_COMPACT_CHECKSUM_BYTES]


def private_key_from_compact(data: bytes) -> rsa.RSAPrivateKey:
    """Read the compact binary form (see `compact_private_key`), recomputing and validating the key."""
    data = bytes(data)
    if len(data) < 1 + _COMPACT_CHECKSUM_BYTES:
        raise KeyFormatError("The compact key is too short.")
    if data[0] != COMPACT_KEY_VERSION:
        raise KeyFormatError(f"Unknown compact key version {data[0]} (this software reads version 1).")
    body, checksum = data[:-_COMPACT_CHECKSUM_BYTES], data[-_COMPACT_CHECKSUM_BYTES:]
    if hashlib.sha256(body).digest()[:_COMPACT_CHECKSUM_BYTES] != checksum:
        raise KeyFormatError(
            "The compact key's checksum does not match: it was mistyped, misread or damaged."
        )
    values: list[int] = []
    offset = 1
    for name in ("e", "p", "q", "d"):
        if offset + 2 > len(body):
            raise KeyFormatError(f"The compact key ends before its '{name}'.")
        (length,) = struct.unpack_from(">H", body, offset)
        offset += 2
        if length == 0 or offset + length > len(body):
            raise KeyFormatError(f"The compact key's '{name}' is missing or cut short.")
        values.append(int.from_bytes(body[offset : offset + length], "big"))
        offset += length
    if offset != len(body):
        raise KeyFormatError("The compact key has trailing bytes.")
    e, p, q, d = values
    return _private_key_from_parts(e, p, q, d)


def compact_private_key_text(private_key: rsa.RSAPrivateKey) -> str:
    """The compact form as text: 'RDPK1:' + unpadded RFC 4648 base32 (1,670 characters for a 4096-bit key).

    Only upper-case letters, digits 2-7 and ':', all in the QR code's alphanumeric set (5.5 bits
    per character), so it fits a version 24-L / 28-M QR code. Case-insensitive when read back.
    """
    encoded = base64.b32encode(compact_private_key(private_key)).decode("ascii").rstrip("=")
    return COMPACT_KEY_PREFIX + encoded


def private_key_from_compact_text(text: str) -> rsa.RSAPrivateKey:
    """Read the text form (see `compact_private_key_text`); whitespace and case are ignored."""
    cleaned = "".join(text.split()).upper()
    if not cleaned.startswith(COMPACT_KEY_PREFIX):
        if cleaned.startswith("RDPK") and ":" in cleaned:
            version = cleaned[4 : cleaned.index(":")]
            raise KeyFormatError(f"Unknown compact key text version {version!r} (this software reads 1).")
        raise KeyFormatError(f"A compact key text starts with {COMPACT_KEY_PREFIX!r}.")
    encoded = cleaned[len(COMPACT_KEY_PREFIX) :]
    try:
        raw = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
    except (binascii.Error, ValueError):
        raise KeyFormatError("The compact key text is not valid base32 (mistyped or misread?).") from None
    return private_key_from_compact(raw)


def _private_key_from_jwk(jwk: Mapping[str, Any]) -> rsa.RSAPrivateKey:
    _check_jwk_kty(jwk)
    if "d" not in jwk:
        raise KeyFormatError("This JWK is a public key; a private key is needed (it has 'd').")
    n, e, d = _b64url_int(jwk, "n"), _b64url_int(jwk, "e"), _b64url_int(jwk, "d")
    _require_bits(n.bit_length())
    if "p" in jwk and "q" in jwk:
        p, q = _b64url_int(jwk, "p"), _b64url_int(jwk, "q")
    else:
        try:
            p, q = rsa.rsa_recover_prime_factors(n, e, d)
        except ValueError:
            raise KeyFormatError("The JWK's n, e and d do not form an RSA key.") from None
    if p * q != n:
        raise KeyFormatError("The JWK's p and q do not multiply to n.")
    # dp, dq and qi are derived values: recomputed rather than trusted.
    return _private_key_from_parts(e, p, q, d)


def load_private_key(
    data: str | bytes | Mapping[str, Any], password: bytes | str | None = None
) -> rsa.RSAPrivateKey:
    """Read an RSA private key: PEM (PKCS#8, possibly encrypted; PKCS#1; OpenSSH), JWK or compact text.

    `KeyFormatError` with a clear message for anything else, for public keys, for keys that are
    not RSA and for RSA keys other than 4096 bits.
    """
    if isinstance(data, Mapping):
        return _private_key_from_jwk(data)
    text = _as_text(data, "private key").strip()
    if not text:
        raise KeyFormatError("The private key is empty.")
    if text.startswith("{"):
        return _private_key_from_jwk(_jwk_from_text(text))
    if text[:4].upper() == "RDPK":
        return private_key_from_compact_text(text)
    if text.startswith("-----BEGIN"):
        first_line = text.splitlines()[0]
        if "PRIVATE KEY-----" not in first_line:
            raise KeyFormatError("This PEM is not a private key (a public key or certificate?).")
        secret = password.encode("utf-8") if isinstance(password, str) else password
        loader = (
            serialization.load_ssh_private_key
            if "OPENSSH PRIVATE KEY" in first_line
            else serialization.load_pem_private_key
        )
        try:
            key = loader(text.encode("ascii"), password=secret)
        except TypeError:
            if secret is None:
                raise KeyPasswordRequiredError("The private key is encrypted; give its password.") from None
            raise KeyFormatError("The private key is not encrypted; give no password.") from None
        except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
            raise KeyFormatError(
                "The PEM private key could not be read (wrong password, or damaged)."
            ) from None
        return _require_rsa_private(key)
    raise KeyFormatError(
        "Unrecognised private key format; expected PEM ('-----BEGIN PRIVATE KEY-----'), "
        f"a JWK or a compact key text ('{COMPACT_KEY_PREFIX}...')."
    )


# --- sealing secrets in flight --------------------------------------------------------------------


def sealing_secret() -> bytes:
    """The server's sealing secret, from Django settings (imported here, lazily).

    `settings.PORTAL_SEALING_KEY` (at least 32 characters) when set; otherwise a 32-byte key
    derived with HKDF-SHA256 from `settings.SECRET_KEY`, so rotating SECRET_KEY invalidates sealed
    tokens in flight (they are short-lived anyway).
    """
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    configured = getattr(settings, "PORTAL_SEALING_KEY", "") or ""
    if configured:
        secret = configured.encode("utf-8") if isinstance(configured, str) else bytes(configured)
        if len(secret) < _SEALING_SECRET_MIN_BYTES:
            raise ImproperlyConfigured(
                f"PORTAL_SEALING_KEY must be at least {_SEALING_SECRET_MIN_BYTES} characters long."
            )
        return secret
    if not settings.SECRET_KEY:
        raise ImproperlyConfigured("Neither PORTAL_SEALING_KEY nor SECRET_KEY is set; cannot seal secrets.")
    return hkdf_sha256(settings.SECRET_KEY.encode("utf-8"), b"rdp-sealing-secret-from-secret-key-v1")


def hkdf_sha256(secret: bytes, info: bytes) -> bytes:
    """32 bytes derived from `secret` with HKDF-SHA256 (no salt) for the context `info`."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _seal_key(secret: bytes, purpose: str) -> bytes:
    if not isinstance(secret, bytes | bytearray) or len(secret) < _SEALING_SECRET_MIN_BYTES:
        raise ValueError(f"the sealing secret must be at least {_SEALING_SECRET_MIN_BYTES} bytes")
    if not isinstance(purpose, str) or not purpose:
        raise ValueError("the purpose must be a non-empty string")
    return _derived_seal_key(bytes(secret), purpose)


@functools.lru_cache(maxsize=256)
def _derived_seal_key(secret: bytes, purpose: str) -> bytes:
    # Kept for the chunks of an upload that follow each other (the secret is in memory anyway).
    return hkdf_sha256(secret, _SEAL_INFO + purpose.encode("utf-8"))


def seal(secret: bytes, payload: bytes, *, purpose: str, ttl_seconds: int, now: float | None = None) -> str:
    """Encrypt `payload` for the server itself, for one purpose and a limited time; returns a token.

    The key is HKDF-SHA256(secret, info=b"rdp-seal-v1\\0" + purpose), so a token sealed for one
    purpose (say "upload-key") never opens for another. The token is "s1." + base64url of: version
    byte, expiry as 8-byte Unix seconds, 12-byte nonce, AES-256-GCM ciphertext and tag; version and
    expiry are the associated data. `secret` comes from `sealing_secret()` in the server.
    """
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be a positive integer")
    key = _seal_key(secret, purpose)
    expires_at = math.ceil(time.time() if now is None else now) + ttl_seconds
    header = _SEAL_HEADER.pack(_SEAL_VERSION, expires_at)
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, bytes(payload), header)
    return _SEAL_TOKEN_PREFIX + base64.urlsafe_b64encode(header + nonce + sealed).rstrip(b"=").decode("ascii")


def unseal(secret: bytes, token: str, *, purpose: str, now: float | None = None) -> bytes:
    """Open a token made by `seal`; `SealError` if malformed, altered, or for another purpose or
    secret, `SealExpiredError` (a `SealError`) if authentic but expired."""
    key = _seal_key(secret, purpose)
    if not isinstance(token, str) or not token.startswith(_SEAL_TOKEN_PREFIX):
        raise SealError(f"Not a sealed token (it starts with {_SEAL_TOKEN_PREFIX!r}).")
    encoded = token[len(_SEAL_TOKEN_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise SealError("The sealed token is not valid base64url.") from None
    if len(raw) < _SEAL_HEADER.size + NONCE_BYTES + TAG_BYTES:
        raise SealError("The sealed token is too short.")
    header = raw[: _SEAL_HEADER.size]
    version, expires_at = _SEAL_HEADER.unpack(header)
    if version != _SEAL_VERSION:
        raise SealError(f"Unknown sealed token version {version}.")
    nonce = raw[_SEAL_HEADER.size : _SEAL_HEADER.size + NONCE_BYTES]
    try:
        payload = AESGCM(key).decrypt(nonce, raw[_SEAL_HEADER.size + NONCE_BYTES :], header)
    except InvalidTag:
        raise SealError(
            "The sealed token does not verify: it was altered, or sealed for another purpose or secret."
        ) from None
    # Checked after authentication, so that a forged expiry cannot even choose the message.
    if (time.time() if now is None else now) >= expires_at:
        when = datetime.fromtimestamp(expires_at, UTC).isoformat()
        raise SealExpiredError(f"The sealed token expired at {when}.")
    return payload
