"""storage.recovery: the reference writer, the recovery file, and offline recovery."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from storage import crypto, recovery
from storage.crypto import ChunkIntegrityError
from storage.recovery import RecoveryError, RecoveryFormatError, RecoveryKeyError

CHUNK_SIZE = 4096
DATASET = "quiet_amber_heron"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def plaintext() -> bytes:
    return os.urandom(5 * CHUNK_SIZE + 1234)  # six chunks, the last one short


@pytest.fixture
def dataset(tmp_path, plaintext, root_key_a, root_key_b):
    """A multi-chunk file encrypted for two root keys: (directory, recovery path, document, data key)."""
    source = tmp_path / "scan.tiff"
    source.write_bytes(plaintext)
    directory = tmp_path / "dataset"
    data_key = crypto.new_data_key()
    document = recovery.encrypt_file_to_directory(
        source,
        directory,
        DATASET,
        data_key,
        [root_key_a.public_key(), root_key_b.public_key()],
        CHUNK_SIZE,
        dataset_name="Scans, batch 1",
    )
    return directory, directory / recovery.RECOVERY_FILE_NAME, document, data_key


def recover_bytes(path: Path, key) -> bytes:
    out = io.BytesIO()
    recovery.recover_dataset(path, key, out)
    return out.getvalue()


def rewrite(path: Path, document: dict, data_key: bytes | None = None) -> None:
    """Write an edited document, re-authenticated when the data key is given (an insider's edit)."""
    if data_key is not None:
        document["authenticator"] = recovery.recovery_authenticator(document, data_key)
    path.write_text(json.dumps(document), encoding="utf-8")


def test_writer_output(dataset, plaintext, tmp_path):
    directory, path, document, data_key = dataset
    assert sorted(p.name for p in (directory / "chunks").iterdir()) == [f"{i:06d}.bin" for i in range(6)]
    assert not [p for p in directory.rglob("*") if p.name.endswith(".tmp")]
    assert recovery.read_recovery_file(path) == document
    assert document["file_name"] == "scan.tiff"
    assert document["size"] == len(plaintext)
    assert document["chunk_count"] == 6
    assert document["chunks"][-1]["plaintext_size"] == 1234
    assert document["key_fingerprint"] == crypto.key_fingerprint(data_key)
    assert document["dataset_hash"] == crypto.hash_file(tmp_path / "scan.tiff", CHUNK_SIZE)[0]
    assert len(document["wrapped_keys"]) == 2
    for row in document["chunks"]:
        assert (directory / row["file"]).stat().st_size == row["ciphertext_size"]


def test_recover_with_either_root_key(dataset, plaintext, root_key_a, root_key_b):
    _, path, document, _ = dataset
    for key in (root_key_a, root_key_b):
        out = io.BytesIO()
        result = recovery.recover_dataset(path, key, out)
        assert out.getvalue() == plaintext
        assert result.dataset_hash == document["dataset_hash"]
        assert (result.size, result.chunks, result.file_name) == (len(plaintext), 6, "scan.tiff")


def test_recover_with_a_key_that_is_not_a_root_key(dataset, user_key):
    _, path, _, _ = dataset
    fingerprint = crypto.public_key_fingerprint(user_key.public_key())
    with pytest.raises(RecoveryKeyError, match=f"not wrapped for this private key.*{fingerprint}"):
        recover_bytes(path, user_key)


def test_recovery_by_hand_as_documented(dataset, plaintext, root_key_b, tmp_path):
    """The Python snippet in docs/recovery-file.md recovers the same bytes."""
    doc_text = (REPO / "docs" / "recovery-file.md").read_text(encoding="utf-8")
    snippet = re.search(r"<!-- recovery-by-hand -->\n```python\n(.*?)```", doc_text, re.DOTALL).group(1)
    namespace: dict = {}
    exec(compile(snippet, "docs/recovery-file.md", "exec"), namespace)  # noqa: S102 - our own docs
    key_file = tmp_path / "root.pem"
    key_file.write_text(crypto.private_key_pem(root_key_b))
    out = tmp_path / "by-hand.bin"
    _, path, document, _ = dataset
    assert namespace["recover"](path, key_file, out) == document["dataset_hash"]
    assert out.read_bytes() == plaintext


def test_flipped_byte_names_the_chunk(dataset, root_key_a):
    directory, path, _, _ = dataset
    chunk = directory / "chunks" / "000002.bin"
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0x80
    chunk.write_bytes(bytes(data))
    with pytest.raises(
        ChunkIntegrityError, match=r"chunk 2 \(chunks/000002.bin\) failed authentication"
    ) as caught:
        recover_bytes(path, root_key_a)
    assert (caught.value.index, caught.value.file) == (2, "chunks/000002.bin")


def test_swapped_chunk_files_are_detected(dataset, root_key_a):
    directory, path, _, _ = dataset
    first, second = directory / "chunks" / "000000.bin", directory / "chunks" / "000001.bin"
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    with pytest.raises(ChunkIntegrityError, match="chunk 0") as caught:
        recover_bytes(path, root_key_a)
    assert caught.value.index == 0


def test_chunk_replayed_at_another_index_is_detected_even_in_a_consistent_document(dataset, root_key_a):
    """Copy chunk 0 (file, nonce and hash) to position 1, re-authenticating the document: the
    associated data (dataset id + index) still refuses it."""
    directory, path, document, data_key = dataset
    shutil.copyfile(directory / "chunks" / "000000.bin", directory / "chunks" / "000001.bin")
    first, second = document["chunks"][0], document["chunks"][1]
    second.update(nonce=first["nonce"], plaintext_sha256=first["plaintext_sha256"])
    document["dataset_hash"] = crypto.dataset_hash(row["plaintext_sha256"] for row in document["chunks"])
    rewrite(path, document, data_key)
    with pytest.raises(ChunkIntegrityError, match="chunk 1") as caught:
        recover_bytes(path, root_key_a)
    assert caught.value.index == 1


def test_missing_and_truncated_chunk_files(dataset, root_key_a):
    directory, path, _, _ = dataset
    chunk = directory / "chunks" / "000004.bin"
    chunk.write_bytes(chunk.read_bytes()[:-1])
    with pytest.raises(ChunkIntegrityError, match=r"chunk 4 \(chunks/000004.bin\): the file is 4111 bytes"):
        recover_bytes(path, root_key_a)
    chunk.unlink()
    with pytest.raises(RecoveryError, match="chunk 4 .* missing"):
        recover_bytes(path, root_key_a)


def test_altered_document_fails_the_authenticator(dataset, root_key_a):
    _, path, document, _ = dataset
    document["file_name"] = "something-else.tiff"
    rewrite(path, document)
    with pytest.raises(RecoveryFormatError, match="authenticator does not match"):
        recover_bytes(path, root_key_a)


def test_dropped_last_chunk_is_detected(dataset, root_key_a):
    _, path, document, _ = dataset
    removed = document["chunks"].pop()
    document["chunk_count"] -= 1
    document["size"] -= removed["plaintext_size"]
    document["dataset_hash"] = crypto.dataset_hash(row["plaintext_sha256"] for row in document["chunks"])
    rewrite(path, document)
    with pytest.raises(RecoveryFormatError, match="authenticator"):
        recover_bytes(path, root_key_a)


def test_wrong_key_fingerprint_is_detected(dataset, root_key_a):
    _, path, document, _ = dataset
    document["key_fingerprint"] = "0" * 64
    rewrite(path, document)
    with pytest.raises(RecoveryKeyError, match="key_fingerprint"):
        recover_bytes(path, root_key_a)


def test_corrupted_recovery_json(dataset, root_key_a):
    _, path, _, _ = dataset
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(RecoveryFormatError, match=r"recovery.json: not valid JSON \(line \d+"):
        recovery.read_recovery_file(path)
    with pytest.raises(RecoveryFormatError, match="not valid JSON"):
        recover_bytes(path, root_key_a)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(RecoveryFormatError, match="not UTF-8"):
        recovery.read_recovery_file(path)
    with pytest.raises(RecoveryError, match="cannot read"):
        recovery.read_recovery_file(path.with_name("absent.json"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="other"), "not a recovery document"),
        (lambda d: d.update(version=2), "unsupported recovery format version 2"),
        (lambda d: d.pop("chunk_size"), "missing field.*chunk_size"),
        (lambda d: d.update(size=1), "size is 1 but the chunks add up"),
        (lambda d: d.update(chunk_count=2), "chunk_count is 2"),
        (lambda d: d.update(dataset_hash="ab" * 32), "dataset_hash is not the hash"),
        (lambda d: d.update(key_fingerprint="xyz"), "key_fingerprint must be 64"),
        (lambda d: d["chunks"][1].update(index=5), r"chunks\[1\].index is 5"),
        (lambda d: d["chunks"][1].update(nonce="AAAA"), r"chunks\[1\].nonce must decode to 12 bytes"),
        (lambda d: d["chunks"][1].update(nonce="%%%"), r"chunks\[1\].nonce is not valid base64"),
        (
            lambda d: d["chunks"][2].update(file="../../etc/passwd"),
            r"chunks\[2\].file must be a plain relative",
        ),
        (lambda d: d["chunks"][2].update(file="/etc/passwd"), r"chunks\[2\].file must be a plain relative"),
        (lambda d: d["chunks"][2].update(file=d["chunks"][0]["file"]), "used by two chunks"),
        (lambda d: d["chunks"][0].update(ciphertext_size=1), r"chunks\[0\].ciphertext_size"),
        (
            lambda d: d["chunks"][0].update(plaintext_size="4096"),
            r"chunks\[0\].plaintext_size must be an integer",
        ),
        (lambda d: d.update(wrapped_keys=[]), "wrapped_keys must be a non-empty list"),
        (lambda d: d["wrapped_keys"][0].update(wrapped_key="AAAA"), "must decode to 512 bytes"),
        (lambda d: d["wrapped_keys"].append(dict(d["wrapped_keys"][0])), "listed twice"),
        (lambda d: d["algorithms"].update(chunk_cipher="AES-128-CBC"), "algorithms must be"),
    ],
)
def test_invalid_documents_are_refused_with_the_field_named(dataset, edit, message):
    _, path, document, _ = dataset
    edit(document)
    rewrite(path, document)
    with pytest.raises(RecoveryFormatError, match=message):
        recovery.read_recovery_file(path)
    with pytest.raises(RecoveryFormatError):
        recovery.write_recovery_file(path.parent, document)


def test_write_recovery_file_is_atomic_and_replaces(dataset, root_key_a, root_key_b, user_key):
    directory, path, document, data_key = dataset
    # A further root key's wrap can be added without touching the authenticator.
    document["wrapped_keys"].append(
        {
            "root_key_fingerprint": crypto.public_key_fingerprint(user_key.public_key()),
            "wrapped_key": base64.b64encode(crypto.wrap_key(user_key.public_key(), data_key)).decode(),
        }
    )
    assert recovery.write_recovery_file(directory, document) == path
    assert [p.name for p in directory.iterdir() if p.is_file()] == ["recovery.json"]
    assert recovery.read_recovery_file(path) == document
    assert recover_bytes(path, user_key) == recover_bytes(path, root_key_a)


def test_empty_file_has_no_chunks(tmp_path, root_key_a):
    source = tmp_path / "empty"
    source.write_bytes(b"")
    document = recovery.encrypt_file_to_directory(
        source, tmp_path / "ds", DATASET, crypto.new_data_key(), [root_key_a.public_key()], CHUNK_SIZE
    )
    assert document["chunks"] == [] and document["size"] == 0
    assert document["dataset_hash"] == hashlib.sha256(b"").hexdigest()
    assert recover_bytes(tmp_path / "ds" / "recovery.json", root_key_a) == b""


def test_writer_refuses_an_existing_dataset_and_needs_a_root_key(dataset, tmp_path, root_key_a):
    directory, _, _, _ = dataset
    source = tmp_path / "scan.tiff"
    with pytest.raises(FileExistsError):
        recovery.encrypt_file_to_directory(
            source, directory, DATASET, crypto.new_data_key(), [root_key_a.public_key()], CHUNK_SIZE
        )
    with pytest.raises(ValueError, match="at least one root public key"):
        recovery.encrypt_file_to_directory(
            source, tmp_path / "other", DATASET, crypto.new_data_key(), [], 1000
        )
    assert not (tmp_path / "other").exists()


def test_build_recovery_document_accepts_existing_wraps(root_key_a):
    data_key = crypto.new_data_key()
    nonce, ciphertext = crypto.encrypt_chunk(data_key, DATASET, 0, b"hello")
    row = recovery.ChunkRecord(
        0, nonce, hashlib.sha256(b"hello").digest(), 5, len(ciphertext), "chunks/000000.bin"
    )
    fingerprint = crypto.public_key_fingerprint(root_key_a.public_key())
    document = recovery.build_recovery_document(
        dataset_id=DATASET,
        dataset_name="",
        file_name="hello.txt",
        chunk_size=CHUNK_SIZE,
        chunks=[row],
        data_key=data_key,
        wrapped_keys={fingerprint: crypto.wrap_key(root_key_a.public_key(), data_key)},
    )
    assert document["wrapped_keys"][0]["root_key_fingerprint"] == fingerprint
    assert document["authenticator"] == recovery.recovery_authenticator(document, data_key)
    assert recovery.chunk_file_name(1_234_567) == "chunks/1234567.bin"
