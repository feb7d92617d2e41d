"""storage.crypto: data keys, chunks, hashes, key formats, wrapping, compact keys, sealing."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import struct
import subprocess

import pytest
import segno
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.core.exceptions import ImproperlyConfigured

from storage import crypto
from storage.crypto import ChunkIntegrityError, KeyFormatError, KeyUnwrapError, SealError, SealExpiredError

DATASET = "brisk_silver_otter"


def b64url(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def private_jwk(key: rsa.RSAPrivateKey, *, primes: bool = True) -> dict[str, str]:
    numbers = key.private_numbers()
    jwk = {"kty": "RSA", "n": b64url(numbers.public_numbers.n), "e": b64url(numbers.public_numbers.e)}
    jwk["d"] = b64url(numbers.d)
    if primes:
        jwk.update(
            p=b64url(numbers.p),
            q=b64url(numbers.q),
            dp=b64url(numbers.dmp1),
            dq=b64url(numbers.dmq1),
            qi=b64url(numbers.iqmp),
        )
    return jwk


# --- data keys and chunks -------------------------------------------------------------------------


def test_new_data_key_is_32_random_bytes():
    keys = {crypto.new_data_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(len(key) == 32 for key in keys)


def test_key_fingerprint_is_hex_sha256_of_the_key():
    key = bytes(range(32))
    assert crypto.key_fingerprint(key) == hashlib.sha256(key).hexdigest()
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.key_fingerprint(b"short")


def test_chunk_aad_encoding_is_exact_and_unambiguous():
    assert crypto.chunk_aad("ab", 1) == b"rdp-chunk-v1\x00" + b"\x00\x00\x00\x02" + b"ab" + struct.pack(
        ">Q", 1
    )
    # Length-prefixed id and fixed-width index: no two (id, index) pairs share an encoding.
    pairs = [("a", 0), ("a", 1), ("a", 256), ("a\x00", 0), ("ab", 0), ("b", 0), ("é", 0)]
    assert len({crypto.chunk_aad(d, i) for d, i in pairs}) == len(pairs)
    for bad in [-1, 2**64, True, 1.0]:
        with pytest.raises(ValueError):
            crypto.chunk_aad("a", bad)
    with pytest.raises(ValueError):
        crypto.chunk_aad("", 0)


def test_chunk_round_trip():
    key = crypto.new_data_key()
    plaintext = b"some bytes of a dataset" * 100
    nonce, ciphertext = crypto.encrypt_chunk(key, DATASET, 7, plaintext)
    assert len(nonce) == 12
    assert len(ciphertext) == len(plaintext) + 16
    assert crypto.decrypt_chunk(key, DATASET, 7, nonce, ciphertext) == plaintext
    assert crypto.encrypt_chunk(key, DATASET, 7, plaintext)[0] != nonce  # a fresh nonce each time


def test_flipped_byte_fails_naming_the_chunk():
    key = crypto.new_data_key()
    nonce, ciphertext = crypto.encrypt_chunk(key, DATASET, 3, b"x" * 1000)
    damaged = bytearray(ciphertext)
    damaged[500] ^= 0x01
    with pytest.raises(ChunkIntegrityError, match="chunk 3") as caught:
        crypto.decrypt_chunk(key, DATASET, 3, nonce, bytes(damaged))
    assert caught.value.index == 3


def test_chunk_replayed_at_another_index_or_dataset_fails():
    key = crypto.new_data_key()
    nonce, ciphertext = crypto.encrypt_chunk(key, DATASET, 0, b"first chunk")
    with pytest.raises(ChunkIntegrityError) as caught:
        crypto.decrypt_chunk(key, DATASET, 1, nonce, ciphertext)
    assert caught.value.index == 1
    with pytest.raises(ChunkIntegrityError):
        crypto.decrypt_chunk(key, "other_dataset_id", 0, nonce, ciphertext)


def test_wrong_key_or_nonce_fails():
    key = crypto.new_data_key()
    nonce, ciphertext = crypto.encrypt_chunk(key, DATASET, 0, b"secret")
    with pytest.raises(ChunkIntegrityError, match="key is wrong"):
        crypto.decrypt_chunk(crypto.new_data_key(), DATASET, 0, nonce, ciphertext)
    with pytest.raises(ChunkIntegrityError):
        crypto.decrypt_chunk(key, DATASET, 0, bytes(12), ciphertext)
    with pytest.raises(ChunkIntegrityError, match="nonce"):
        crypto.decrypt_chunk(key, DATASET, 0, b"short", ciphertext)
    with pytest.raises(ChunkIntegrityError, match="tag"):
        crypto.decrypt_chunk(key, DATASET, 0, nonce, b"tiny")


# --- hashes ---------------------------------------------------------------------------------------


def test_dataset_hash_is_sha256_over_raw_chunk_digests():
    chunks = [b"aaaa", b"bbbb", b"cc"]
    digests = [hashlib.sha256(c).digest() for c in chunks]
    expected = hashlib.sha256(b"".join(digests)).hexdigest()
    assert crypto.dataset_hash(digests) == expected
    assert crypto.dataset_hash([d.hex() for d in digests]) == expected
    assert crypto.dataset_hash([]) == hashlib.sha256(b"").hexdigest()
    with pytest.raises(ValueError, match="chunk hash 1"):
        crypto.dataset_hash([digests[0], b"short"])


class TrickleReader(io.RawIOBase):
    """Returns at most 7 bytes per read, like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self.buffer.read(min(size, 7) if size > 0 else 7)


@pytest.mark.parametrize("length", [0, 1, 999, 1000, 1001, 5500])
def test_hash_file_streams_in_chunks(tmp_path, length):
    data = bytes(i % 251 for i in range(length))
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    chunks = [data[i : i + 1000] for i in range(0, length, 1000)] or [b""]  # empty: one empty chunk
    expected = crypto.dataset_hash(hashlib.sha256(c).digest() for c in chunks)

    digest, chunk_hashes = crypto.hash_file(path, chunk_size=1000)
    assert digest == expected
    assert chunk_hashes == [hashlib.sha256(c).hexdigest() for c in chunks]
    assert crypto.hash_file(str(path), 1000)[0] == expected
    assert crypto.hash_file(TrickleReader(data), 1000) == (digest, chunk_hashes)


def test_hash_file_rejects_bad_chunk_sizes(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    for bad in [0, -1, crypto.MAX_CHUNK_SIZE + 1]:
        with pytest.raises(ValueError, match="chunk size"):
            crypto.hash_file(path, bad)


# --- public keys ----------------------------------------------------------------------------------


def test_public_key_formats_all_load_to_the_same_key(root_key_a):
    public = root_key_a.public_key()
    fingerprint = crypto.public_key_fingerprint(public)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert fingerprint == hashlib.sha256(der).hexdigest()

    pem = crypto.public_key_pem(public)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    pkcs1 = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    ssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    jwk = crypto.public_key_jwk(public)
    assert jwk["kty"] == "RSA" and jwk["alg"] == "RSA-OAEP-256"

    for form in [
        pem,
        pem.encode(),
        "\n  " + pem,
        pkcs1,
        ssh,
        ssh.decode() + " alice@laptop",
        jwk,
        json.dumps(jwk),
    ]:
        loaded = crypto.load_public_key(form)
        assert crypto.public_key_fingerprint(loaded) == fingerprint


def test_public_keys_of_other_sizes_are_refused_with_a_clear_message(small_rsa_key):
    public = small_rsa_key.public_key()
    forms = [
        crypto.public_key_pem(public),
        public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
        crypto.public_key_jwk(public),
    ]
    for form in forms:
        with pytest.raises(KeyFormatError, match="has 2048 bits; the portal needs 4096-bit RSA keys"):
            crypto.load_public_key(form)


def test_non_rsa_public_keys_are_refused_with_a_clear_message():
    ec_public = ec.generate_private_key(ec.SECP256R1()).public_key()
    ec_pem = ec_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFormatError, match=r"elliptic-curve key \(secp256r1\), not an RSA key"):
        crypto.load_public_key(ec_pem)
    ed_ssh = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    with pytest.raises(KeyFormatError, match="Ed25519 key, not an RSA key"):
        crypto.load_public_key(ed_ssh)
    with pytest.raises(KeyFormatError, match="elliptic-curve key"):
        crypto.load_public_key({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})


def test_unreadable_or_private_input_to_load_public_key(root_key_a):
    cases = {
        "": "empty",
        "hello": "Unrecognised public key format",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----": "could not be read",
        "ssh-rsa AAAAnotbase64": "OpenSSH public key",
        "{not json": "not valid JSON",
        "[1, 2]": "Unrecognised",
        crypto.private_key_pem(root_key_a): "This is a private key",
        json.dumps(private_jwk(root_key_a)): "contains a private key",
        json.dumps({"kty": "RSA", "e": "AQAB"}): "no 'n'",
        b"\xff\xfe": "not text",
    }
    for text, message in cases.items():
        with pytest.raises(KeyFormatError, match=message):
            crypto.load_public_key(text)


# --- wrapping -------------------------------------------------------------------------------------


def test_wrap_unwrap_round_trip(root_key_a, user_key):
    data_key = crypto.new_data_key()
    wrapped = crypto.wrap_key(root_key_a.public_key(), data_key)
    assert len(wrapped) == 512
    assert crypto.wrap_key(root_key_a.public_key(), data_key) != wrapped  # OAEP is randomised
    assert crypto.unwrap_key(root_key_a, wrapped) == data_key
    with pytest.raises(KeyUnwrapError, match="another key pair"):
        crypto.unwrap_key(user_key, wrapped)
    with pytest.raises(KeyUnwrapError, match="512 bytes"):
        crypto.unwrap_key(root_key_a, wrapped[:-1])


def test_wrap_refuses_small_keys_and_bad_data_keys(root_key_a, small_rsa_key):
    with pytest.raises(KeyFormatError, match="2048 bits"):
        crypto.wrap_key(small_rsa_key.public_key(), crypto.new_data_key())
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.wrap_key(root_key_a.public_key(), b"too short")


WEBCRYPTO_SCRIPT = r"""
import { readFileSync } from "node:fs";
const subtle = globalThis.crypto.subtle;
const input = JSON.parse(readFileSync(0, "utf8"));
const b64 = (s) => Uint8Array.from(Buffer.from(s, "base64"));
const out = (a) => Buffer.from(new Uint8Array(a)).toString("base64");
const rsaOaep = { name: "RSA-OAEP", hash: "SHA-256" };

const publicKey = await subtle.importKey("jwk", input.public_jwk, rsaOaep, true, ["wrapKey", "encrypt"]);
const privateKey = await subtle.importKey("jwk", input.private_jwk, rsaOaep, false, ["unwrapKey", "decrypt"]);
const spki = await subtle.exportKey("spki", publicKey);
const fingerprint = Buffer.from(await subtle.digest("SHA-256", spki)).toString("hex");

// The chunk AAD as documented in storage.crypto.chunk_aad.
const enc = new TextEncoder();
const prefix = enc.encode("rdp-chunk-v1\0");
const id = enc.encode(input.dataset_id);
const aad = new Uint8Array(prefix.length + 4 + id.length + 8);
const view = new DataView(aad.buffer);
aad.set(prefix, 0);
view.setUint32(prefix.length, id.length);
aad.set(id, prefix.length + 4);
view.setBigUint64(prefix.length + 4 + id.length, BigInt(input.index));

// Browser -> server: a key and a chunk made in the browser.
const aesKey = await subtle.generateKey({ name: "AES-GCM", length: 256 }, true, ["encrypt", "decrypt"]);
const wrapped = await subtle.wrapKey("raw", aesKey, publicKey, { name: "RSA-OAEP" });
const iv = globalThis.crypto.getRandomValues(new Uint8Array(12));
const gcm = { name: "AES-GCM", iv, additionalData: aad };
const ciphertext = await subtle.encrypt(gcm, aesKey, b64(input.plaintext));

// Server -> browser: unwrap the server's wrap and decrypt the server's chunk.
const unwrapped = await subtle.unwrapKey("raw", b64(input.py_wrapped), privateKey, { name: "RSA-OAEP" },
  { name: "AES-GCM" }, true, ["decrypt"]);
const pyPlain = await subtle.decrypt({ name: "AES-GCM", iv: b64(input.py_nonce), additionalData: aad },
  unwrapped, b64(input.py_ciphertext));

console.log(JSON.stringify({
  fingerprint, wrapped: out(wrapped), iv: out(iv), ciphertext: out(ciphertext),
  raw_key: out(await subtle.exportKey("raw", aesKey)), py_plain: out(pyPlain),
}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js for its Web Crypto")
def test_interoperates_with_web_crypto(root_key_a):
    """Node's `crypto.subtle` is the Web Crypto API browsers implement."""
    data_key = crypto.new_data_key()
    py_nonce, py_ciphertext = crypto.encrypt_chunk(data_key, DATASET, 5, b"from the server")
    payload = {
        "public_jwk": crypto.public_key_jwk(root_key_a.public_key()),
        "private_jwk": private_jwk(root_key_a),
        "dataset_id": DATASET,
        "index": 5,
        "plaintext": base64.b64encode(b"from the browser").decode(),
        "py_wrapped": base64.b64encode(crypto.wrap_key(root_key_a.public_key(), data_key)).decode(),
        "py_nonce": base64.b64encode(py_nonce).decode(),
        "py_ciphertext": base64.b64encode(py_ciphertext).decode(),
    }
    result = subprocess.run(
        ["node", "--input-type=module", "-e", WEBCRYPTO_SCRIPT],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer = json.loads(result.stdout)
    assert answer["fingerprint"] == crypto.public_key_fingerprint(root_key_a.public_key())
    assert base64.b64decode(answer["py_plain"]) == b"from the server"
    browser_key = crypto.unwrap_key(root_key_a, base64.b64decode(answer["wrapped"]))
    assert browser_key == base64.b64decode(answer["raw_key"])
    plaintext = crypto.decrypt_chunk(
        browser_key, DATASET, 5, base64.b64decode(answer["iv"]), base64.b64decode(answer["ciphertext"])
    )
    assert plaintext == b"from the browser"


# --- private keys ---------------------------------------------------------------------------------


def test_compact_private_key_round_trip(root_key_a):
    compact = crypto.compact_private_key(root_key_a)
    assert len(compact) == 1040
    restored = crypto.private_key_from_compact(compact)
    assert restored.private_numbers() == root_key_a.private_numbers()
    # The recomputed key decrypts what was wrapped for the original.
    data_key = crypto.new_data_key()
    assert crypto.unwrap_key(restored, crypto.wrap_key(root_key_a.public_key(), data_key)) == data_key


def test_compact_private_key_text_length_and_qr_code(root_key_a):
    text = crypto.compact_private_key_text(root_key_a)
    assert text.startswith("RDPK1:")
    assert len(text) == 1670  # for every 4096-bit key with e = 65537
    alphanumeric = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
    assert set(text) <= alphanumeric
    qr = segno.make_qr(text, error="m", boost_error=False)
    assert qr.mode == "alphanumeric"
    assert qr.version <= 28  # 129 x 129 modules at error level M (version 24 at level L)
    spread = text[:6] + "\n".join(text[6 + i : 6 + i + 64] for i in range(0, len(text) - 6, 64))
    for form in [text.lower(), f"  {spread}\n"]:
        assert crypto.load_private_key(form).private_numbers() == root_key_a.private_numbers()


def test_damaged_compact_keys_are_refused(root_key_a):
    text = crypto.compact_private_key_text(root_key_a)
    position = 400
    typo = text[:position] + ("A" if text[position] != "A" else "B") + text[position + 1 :]
    with pytest.raises(KeyFormatError, match="checksum"):
        crypto.private_key_from_compact_text(typo)
    with pytest.raises(KeyFormatError, match="base32"):
        crypto.private_key_from_compact_text(text[:100] + "1" + text[101:])
    with pytest.raises(KeyFormatError, match="version '9'"):
        crypto.private_key_from_compact_text("RDPK9:" + text[6:])
    with pytest.raises(KeyFormatError, match="starts with"):
        crypto.private_key_from_compact_text("XYZ")
    compact = bytearray(crypto.compact_private_key(root_key_a))
    compact[0] = 2
    with pytest.raises(KeyFormatError, match="version 2"):
        crypto.private_key_from_compact(bytes(compact))


def hand_made_compact(fields: list[int], widths: list[int]) -> bytes:
    body = bytes([1])
    for number, width in zip(fields, widths, strict=True):
        length = max(width, (number.bit_length() + 7) // 8)
        body += struct.pack(">H", length) + number.to_bytes(length, "big")
    return body + hashlib.sha256(body).digest()[:4]


def test_compact_fields_of_any_width_are_read(root_key_a):
    numbers = root_key_a.private_numbers()
    fields = [numbers.public_numbers.e, numbers.p, numbers.q, numbers.d]
    for widths in ([0, 0, 0, 0], [8, 300, 300, 600]):
        restored = crypto.private_key_from_compact(hand_made_compact(fields, widths))
        assert restored.private_numbers() == numbers


def test_compact_numbers_that_are_not_a_key_are_refused(root_key_a):
    numbers = root_key_a.private_numbers()
    fields = [numbers.public_numbers.e, numbers.p, numbers.q, numbers.d + 2]
    with pytest.raises(KeyFormatError, match="do not form an RSA key"):
        crypto.private_key_from_compact(hand_made_compact(fields, [0, 0, 0, 0]))
    with pytest.raises(KeyFormatError, match="trailing bytes"):
        crypto.private_key_from_compact(hand_made_compact([*fields, 1], [0, 0, 0, 0, 0]))


def test_load_private_key_formats(root_key_a, cheap_encrypted_pem):
    expected = root_key_a.private_numbers()
    pkcs1 = root_key_a.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    forms = [
        crypto.private_key_pem(root_key_a),
        pkcs1,
        private_jwk(root_key_a),
        json.dumps(private_jwk(root_key_a)),
        private_jwk(root_key_a, primes=False),
        crypto.compact_private_key_text(root_key_a),
    ]
    for form in forms:
        assert crypto.load_private_key(form).private_numbers().public_numbers == expected.public_numbers

    encrypted = crypto.private_key_pem(root_key_a, password=b"correct horse")
    assert "ENCRYPTED" in encrypted
    assert crypto.load_private_key(encrypted, password="correct horse").private_numbers() == expected
    with pytest.raises(crypto.KeyPasswordRequiredError, match="encrypted; give its password"):
        crypto.load_private_key(encrypted)
    cheap = cheap_encrypted_pem(root_key_a, b"correct horse")
    with pytest.raises(KeyFormatError, match="wrong password"):
        crypto.load_private_key(cheap, password="wrong")
    with pytest.raises(KeyFormatError, match="not encrypted; give no password"):
        crypto.load_private_key(crypto.private_key_pem(root_key_a), password="pw")


def test_load_private_key_refusals(root_key_a, small_rsa_key):
    ec_pem = (
        ec.generate_private_key(ec.SECP384R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    cases = {
        crypto.public_key_pem(root_key_a.public_key()): "not a private key",
        json.dumps(crypto.public_key_jwk(root_key_a.public_key())): "is a public key",
        crypto.private_key_pem(small_rsa_key): "2048 bits",
        ec_pem: "elliptic-curve key",
        "nonsense": "Unrecognised private key format",
    }
    for text, message in cases.items():
        with pytest.raises(KeyFormatError, match=message):
            crypto.load_private_key(text)


# --- sealing --------------------------------------------------------------------------------------

SECRET = b"s" * 32


def test_seal_round_trip():
    token = crypto.seal(SECRET, b"a data key", purpose="upload-key", ttl_seconds=60)
    assert token.startswith("s1.")
    assert b"a data key" not in base64.urlsafe_b64decode(token[3:] + "==")
    assert crypto.unseal(SECRET, token, purpose="upload-key") == b"a data key"


def test_seal_expires():
    token = crypto.seal(SECRET, b"k", purpose="upload-key", ttl_seconds=60, now=1_000_000)
    assert crypto.unseal(SECRET, token, purpose="upload-key", now=1_000_059) == b"k"
    with pytest.raises(SealExpiredError, match="expired at 1970-01-12T13:47:40"):
        crypto.unseal(SECRET, token, purpose="upload-key", now=1_000_060)


def test_unseal_refuses_tampered_tokens_and_wrong_purpose_or_secret():
    token = crypto.seal(SECRET, b"k" * 32, purpose="upload-key", ttl_seconds=60)
    raw = bytearray(base64.urlsafe_b64decode(token[3:] + "=" * (-len(token[3:]) % 4)))
    for position in [1, 8, 9, 30, len(raw) - 1]:  # expiry, nonce, ciphertext, tag
        altered = raw.copy()
        altered[position] ^= 0x01
        forged = "s1." + base64.urlsafe_b64encode(bytes(altered)).rstrip(b"=").decode()
        with pytest.raises(SealError, match="does not verify"):
            crypto.unseal(SECRET, forged, purpose="upload-key")
    with pytest.raises(SealError, match="another purpose"):
        crypto.unseal(SECRET, token, purpose="worker-key")
    with pytest.raises(SealError, match="does not verify"):
        crypto.unseal(b"t" * 32, token, purpose="upload-key")
    for bad in ["", "s2.AAAA", "s1.!!!!", "s1.AAAA", token[:20]]:
        with pytest.raises(SealError):
            crypto.unseal(SECRET, bad, purpose="upload-key")


def test_seal_arguments_are_checked():
    with pytest.raises(ValueError, match="at least 32 bytes"):
        crypto.seal(b"short", b"k", purpose="p", ttl_seconds=1)
    with pytest.raises(ValueError, match="ttl_seconds"):
        crypto.seal(SECRET, b"k", purpose="p", ttl_seconds=0)
    with pytest.raises(ValueError, match="purpose"):
        crypto.seal(SECRET, b"k", purpose="", ttl_seconds=1)


def test_sealing_secret_from_settings(settings):
    settings.PORTAL_SEALING_KEY = "k" * 40
    assert crypto.sealing_secret() == b"k" * 40
    settings.PORTAL_SEALING_KEY = "too short"
    with pytest.raises(ImproperlyConfigured, match="at least 32"):
        crypto.sealing_secret()
    settings.PORTAL_SEALING_KEY = ""
    settings.SECRET_KEY = "a django secret key"
    derived = crypto.sealing_secret()
    assert len(derived) == 32 and derived == crypto.sealing_secret()
    settings.SECRET_KEY = "another django secret key"
    assert crypto.sealing_secret() != derived
    token = crypto.seal(crypto.sealing_secret(), b"k", purpose="p", ttl_seconds=5)
    assert crypto.unseal(crypto.sealing_secret(), token, purpose="p") == b"k"
