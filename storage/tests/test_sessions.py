"""Plain chunked upload sessions: chunks in any order, checks, resume, finish, cancel, expiry,
handing the file to an app, and who may touch a session."""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import pytest
from django.utils import timezone

from storage.models import UploadSession, UploadState
from storage.services import sessions

pytestmark = pytest.mark.django_db

CHUNK = 64 * 1024


@pytest.fixture(autouse=True)
def purpose():
    sessions.register_upload_purpose("test-files", "files for tests")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def start(client, data: bytes, **extra):
    body = {"file_name": "scan.svs", "size": len(data), "purpose": "test-files", "chunk_size": CHUNK, **extra}
    return client.post("/api/v1/uploads/", body, format="json")


def put(client, upload_id, index, piece, digest=None):
    return client.put(
        f"/api/v1/uploads/{upload_id}/chunks/{index}/",
        piece,
        content_type="application/octet-stream",
        HTTP_X_CONTENT_SHA256=digest or sha(piece),
    )


def pieces(data):
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def test_chunks_in_any_order_then_finish_gives_the_files_hash(api):
    data = os.urandom(3 * CHUNK + 1234)
    owner = api("owner")
    created = start(owner, data, sha256=sha(data))
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["chunk_count"] == 4 and body["state"] == "receiving"
    upload_id = body["id"]
    parts = pieces(data)
    for index in (3, 1, 0):
        assert put(owner, upload_id, index, parts[index]).status_code == 200
    missing = owner.post(f"/api/v1/uploads/{upload_id}/finish/")
    assert missing.status_code == 409 and "1 chunk(s) are missing: 2" in missing.json()["detail"]
    # resume: the chunk table says what arrived
    table = owner.get(f"/api/v1/uploads/{upload_id}/").json()["chunks"]
    assert [c["index"] for c in table] == [0, 1, 3] and table[1]["sha256"] == sha(parts[1])
    assert [s["id"] for s in owner.get("/api/v1/uploads/?state=receiving").json()["results"]] == [upload_id]
    assert put(owner, upload_id, 2, parts[2]).status_code == 200
    done = owner.post(f"/api/v1/uploads/{upload_id}/finish/")
    assert (
        done.status_code == 200 and done.json()["sha256"] == sha(data) and done.json()["state"] == "complete"
    )
    session = UploadSession.objects.get(pk=upload_id)
    assert session.path.read_bytes() == data
    assert owner.post(f"/api/v1/uploads/{upload_id}/finish/").status_code == 200  # again: the same
    late = put(owner, upload_id, 0, parts[0])
    assert late.status_code == 409


def test_bad_chunks_are_refused_and_change_nothing(api):
    data = os.urandom(2 * CHUNK)
    owner = api("owner")
    upload_id = start(owner, data).json()["id"]
    first, second = pieces(data)
    cases = [
        (0, first, "0" * 64, 400, "hash_mismatch"),
        (0, first[:-1], None, 400, "wrong_size"),
        (2, first, None, 400, "invalid_index"),
        (0, first, "xyz", 400, "invalid_hash"),
    ]
    for index, piece, digest, status, code in cases:
        response = put(owner, upload_id, index, piece, digest)
        assert response.status_code == status and response.json()["code"] == code, (index, response.content)
    too_big = put(owner, upload_id, 0, first + b"x")
    assert too_big.status_code == 413
    assert owner.get(f"/api/v1/uploads/{upload_id}/").json()["chunks"] == []
    for bad in (
        {"size": 0},
        {"size": -1},
        {"purpose": "nothing"},
        {"chunk_size": 10},
        {"file_name": ""},
        {"sha256": "abc"},
        {"size": 2**60},
    ):
        response = start(owner, data, **bad)
        assert response.status_code in (400, 413), (bad, response.content)
        assert response.json()["detail"]


def test_a_file_that_differs_from_the_announced_hash_is_not_complete(api):
    data = os.urandom(CHUNK)
    owner = api("owner")
    upload_id = start(owner, data, sha256=sha(b"something else")).json()["id"]
    put(owner, upload_id, 0, data)
    response = owner.post(f"/api/v1/uploads/{upload_id}/finish/")
    assert response.status_code == 409 and "not the" in response.json()["detail"]
    assert UploadSession.objects.get(pk=upload_id).state == UploadState.RECEIVING


def test_cancel_expiry_and_taking_the_file(api, people, tmp_path):
    data = os.urandom(CHUNK + 5)
    owner = api("owner")
    cancelled = start(owner, data).json()["id"]
    path = UploadSession.objects.get(pk=cancelled).path
    assert path.exists()
    assert owner.delete(f"/api/v1/uploads/{cancelled}/").status_code == 204
    assert not path.parent.exists() and UploadSession.objects.get(pk=cancelled).state == "cancelled"
    assert put(owner, cancelled, 0, data[:CHUNK]).status_code == 409

    old = start(owner, data).json()["id"]
    UploadSession.objects.filter(pk=old).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    assert sessions.purge_expired_sessions() == 1
    assert UploadSession.objects.get(pk=old).state == "cancelled"

    kept = start(owner, data).json()["id"]
    for index, piece in enumerate(pieces(data)):
        put(owner, kept, index, piece)
    with pytest.raises(sessions.StorageError, match="started for 'test-files', not 'slide'"):
        sessions.take_file(
            kept, user=people["owner"], purpose="slide", destination=tmp_path / "x", used_by="t"
        )
    with pytest.raises(sessions.StorageError, match="not finished"):
        sessions.take_file(
            kept, user=people["owner"], purpose="test-files", destination=tmp_path / "x", used_by="t"
        )
    owner.post(f"/api/v1/uploads/{kept}/finish/")
    with pytest.raises(sessions.StorageError, match="No such upload of yours"):
        sessions.take_file(
            kept, user=people["writer"], purpose="test-files", destination=tmp_path / "x", used_by="t"
        )
    taken = sessions.take_file(
        kept, user=people["owner"], purpose="test-files", destination=tmp_path / "f", used_by="tests:1"
    )
    assert (tmp_path / "f").read_bytes() == data and taken.state == "used"
    assert owner.delete(f"/api/v1/uploads/{kept}/").status_code == 409


ROLES = ["anonymous", "stranger", "reader", "writer", "owner", "admin"]


def test_a_session_is_its_uploaders_alone(api):
    data = os.urandom(CHUNK)
    upload_id = start(api("owner"), data).json()["id"]
    for role in ROLES:
        client = api(role)
        expected = {"anonymous": (401, 403), "owner": (200,)}.get(role, (404,))
        assert client.get(f"/api/v1/uploads/{upload_id}/").status_code in expected, role
        assert put(client, upload_id, 0, data).status_code in expected, role
        if role != "owner":
            assert client.post(f"/api/v1/uploads/{upload_id}/finish/").status_code in expected, role
            assert client.delete(f"/api/v1/uploads/{upload_id}/").status_code in expected, role
            if role != "anonymous":
                assert client.get("/api/v1/uploads/").json()["results"] == []
        else:
            assert [s["id"] for s in client.get("/api/v1/uploads/").json()["results"]] == [upload_id]
    assert api("owner").post(f"/api/v1/uploads/{upload_id}/finish/").status_code == 200
    assert api("anonymous").post("/api/v1/uploads/", {}, format="json").status_code in (401, 403)
