"""Uploading through the API the way a client does, for the storage tests."""

from __future__ import annotations

import base64
import hashlib

from storage import crypto

CHUNK = 64 * 1024  # the smallest chunk size: small files still have several chunks


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pieces(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def start(client, data: bytes, name: str = "reads.fastq", **extra):
    return client.post(
        "/api/v1/datasets/",
        {
            "file_name": name,
            "size": len(data),
            "chunk_size": CHUNK,
            "first_chunk_sha256": sha(pieces(data)[0]),
            **extra,
        },
        format="json",
    )


def put(client, mnemonic: str, index: int, piece: bytes, digest: str | None = None, **headers):
    return client.put(
        f"/api/v1/datasets/{mnemonic}/chunks/{index}/",
        piece,
        content_type="application/octet-stream",
        headers={"X-Content-SHA256": digest or sha(piece), **headers},
    )


def upload(client, data: bytes, name: str = "reads.fastq") -> str:
    """Start, send every chunk and finish; returns the mnemonic."""
    response = start(client, data, name)
    assert response.status_code == 201, response.content
    mnemonic = response.json()["mnemonic"]
    for index, piece in enumerate(pieces(data)):
        assert put(client, mnemonic, index, piece).status_code == 200
    finished = client.post(f"/api/v1/datasets/{mnemonic}/finish/", {}, format="json")
    assert finished.status_code == 200, finished.content
    return mnemonic


def unwrap(client, mnemonic: str, private_key) -> bytes:
    """What a client does: fetch the wraps for its keys and unwrap the data key with its own."""
    wraps = client.get(f"/api/v1/datasets/{mnemonic}/wraps/").json()
    mine = crypto.public_key_fingerprint(private_key.public_key())
    wrap = next(w for w in wraps if w["key_fingerprint"] == mine)
    return crypto.unwrap_key(private_key, base64.b64decode(wrap["wrapped"]))


def key_header(key: bytes) -> dict[str, str]:
    return {"X-Dataset-Key": base64.b64encode(key).decode()}
