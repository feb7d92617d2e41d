"""Upload links: made and revoked by their owner, used without an account to upload data that only
the owner can read; the link's secret is stored hashed, refused when expired or revoked, and
reaches nothing but the uploads started through it."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import threading

import pytest
from django.db import connection
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from portal.models import AuditEvent
from storage.models import Dataset, DatasetState, Grant, GrantLevel, UploadLink
from storage.services import links
from storage.tests.helpers import CHUNK, key_header, pieces, sha, unwrap, upload

pytestmark = pytest.mark.django_db

UPLOAD = "/api/v1/upload-links/upload/"
ROLES = ("anonymous", "stranger", "reader", "writer", "owner", "admin")
REFUSED = (401, 403)


def make_link(people, role: str = "owner", **fields) -> tuple[UploadLink, str]:
    fields.setdefault("label", "Sequencing facility")
    fields.setdefault("expires_at", timezone.now() + dt.timedelta(days=7))
    return links.create_link(people[role], **fields)


def with_token(token: str | None) -> APIClient:
    """A client with no account, presenting the link's secret (or none) in the header."""
    client = APIClient()
    if token is not None:
        client.credentials(HTTP_X_UPLOAD_TOKEN=token)
    return client


def start(client, data: bytes, name: str = "run42.fastq.gz", **extra):
    return client.post(
        f"{UPLOAD}datasets/",
        {
            "file_name": name,
            "size": len(data),
            "chunk_size": CHUNK,
            "first_chunk_sha256": sha(pieces(data)[0]),
            **extra,
        },
        format="json",
    )


def put(client, handle: str, index: int, piece: bytes, digest: str | None = None, **kwargs):
    return client.put(
        f"{UPLOAD}datasets/{handle}/chunks/{index}/",
        piece,
        content_type=kwargs.pop("content_type", "application/octet-stream"),
        headers={"X-Content-SHA256": digest or sha(piece)},
        **kwargs,
    )


def finish(client, handle: str, body=None):
    return client.post(f"{UPLOAD}datasets/{handle}/finish/", body or {}, format="json")


def send(client, data: bytes, name: str = "run42.fastq.gz") -> dict:
    started = start(client, data, name)
    assert started.status_code == 201, started.content
    handle = started.json()["upload"]
    for index, piece in enumerate(pieces(data)):
        assert put(client, handle, index, piece).status_code == 200
    done = finish(client, handle)
    assert done.status_code == 200, done.content
    return done.json()


def assert_clear(response, status: int | tuple[int, ...], code: str | None = None) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.content[:300])
    body = response.json()
    assert body.get("detail"), body
    if code:
        assert body.get("code") == code, body
    return body


# --- anonymous upload, end to end ------------------------------------------------------------------------


def test_anonymous_upload_through_a_link_then_the_owner_downloads_it(keyed, api, private_keys):
    data = os.urandom(3 * CHUNK + 777)
    link, token = make_link(keyed, max_bytes=10 * CHUNK, max_files=3)
    client = with_token(token)

    info = client.get(UPLOAD)
    assert info.status_code == 200 and info["Cache-Control"] == "no-store"
    assert info.json() == {
        "label": "Sequencing facility",
        "owner": "owner",
        "expires_at": info.json()["expires_at"],
        "chunk_size": info.json()["chunk_size"],
        "remaining_bytes": 10 * CHUNK,
        "remaining_files": 3,
    }

    started = start(client, data)
    assert started.status_code == 201, started.content
    body = started.json()
    assert set(body) == {
        "upload",
        "name",
        "file_name",
        "size",
        "chunk_size",
        "chunk_count",
        "state",
        "sha256",
    }
    assert body["chunk_count"] == 4 and body["state"] == "uploading"
    handle = body["upload"]
    parts = pieces(data)
    for index in (3, 0, 2):
        assert put(client, handle, index, parts[index]).status_code == 200
    table = client.get(f"{UPLOAD}datasets/{handle}/chunks/")
    assert table.status_code == 200
    assert [(c["index"], c["sha256"]) for c in table.json()] == [(i, sha(parts[i])) for i in (0, 2, 3)]
    assert set(table.json()[0]) == {"index", "size", "sha256"}  # no nonce: nothing to decrypt with
    early = finish(client, handle)
    assert_clear(early, 409, "chunks_missing")
    assert put(client, handle, 1, parts[1]).status_code == 200
    done = finish(client, handle)
    assert done.status_code == 200 and done.json()["state"] == "available"

    dataset = Dataset.objects.get(upload_link=link)
    assert dataset.owner == keyed["owner"] and dataset.uploaded_by is None
    assert dataset.state == DatasetState.AVAILABLE and dataset.sha256 == done.json()["sha256"]
    assert list(Grant.objects.filter(dataset=dataset).values_list("user__username", "level")) == [
        ("owner", GrantLevel.WRITE)
    ]
    # The owner reads it with their own key; nobody else got a wrap.
    owner = api("owner")
    key = unwrap(owner, dataset.mnemonic, private_keys["owner"])
    content = owner.get(f"/api/v1/datasets/{dataset.mnemonic}/content/", headers=key_header(key))
    assert content.status_code == 200 and b"".join(content.streaming_content) == data
    assert not dataset.wraps.filter(user_key__user__in=[keyed["stranger"], keyed["admin"]]).exists()

    # Counted against the limits, and every use audited.
    link.refresh_from_db()
    assert (link.used_files, link.used_bytes) == (1, len(data)) and link.last_used_at is not None
    used = AuditEvent.objects.filter(action="storage.upload_link_used", object_id=str(link.pk))
    operations = sorted(e.details["operation"] for e in used)
    assert operations == sorted(["info", "start", "chunk", "chunk", "chunk", "chunks", "chunk", "finish"])
    assert {e.details["dataset"] for e in used if e.details["operation"] != "info"} == {dataset.mnemonic}
    assert all(e.actor is None and e.ip_address == "127.0.0.1" for e in used)

    # Finished: the link no longer reaches it.
    assert_clear(client.get(f"{UPLOAD}datasets/{handle}/chunks/"), 404, "not_found")
    assert_clear(put(client, handle, 0, parts[0]), 404, "not_found")
    assert_clear(finish(client, handle), 404, "not_found")


def test_an_empty_file_and_a_signed_in_visitor_upload_as_the_link(keyed, api):
    link, token = make_link(keyed)
    client = api("stranger")  # a session or bearer token counts for nothing here: only the link
    client.credentials(HTTP_X_UPLOAD_TOKEN=token)
    done = send(client, b"", "empty.txt")
    assert done["size"] == 0 and done["state"] == "available"
    dataset = Dataset.objects.get(upload_link=link)
    assert dataset.uploaded_by is None and dataset.owner == keyed["owner"]
    assert not Grant.objects.filter(dataset=dataset, user=keyed["stranger"]).exists()


def test_the_uploader_learns_nothing_of_the_owners_data(keyed, api):
    data = os.urandom(2 * CHUNK)
    mine = upload(api("owner"), data)  # the owner has this very file already
    _, token = make_link(keyed)
    started = start(with_token(token), data)
    assert started.status_code == 201
    text = started.content.decode()
    assert "duplicates" not in started.json() and mine not in text
    # The handle is not the dataset's mnemonic: it is signed for the link.
    handle = started.json()["upload"]
    mnemonic = Dataset.objects.exclude(mnemonic=mine).get().mnemonic
    assert handle != mnemonic and handle.startswith(mnemonic + ".")


# --- the secret ------------------------------------------------------------------------------------


def test_the_secret_is_answered_once_and_stored_only_hashed(keyed, api):
    owner = api("owner")
    created = owner.post(
        "/api/v1/upload-links/",
        {"label": "Facility", "expires_at": (timezone.now() + dt.timedelta(days=3)).isoformat()},
        format="json",
    )
    assert created.status_code == 201, created.content
    token = created.json()["token"]
    assert token.startswith("rdu_") and len(token) > 40
    assert created.json()["url"] == f"http://testserver/upload/{token}/"
    link = UploadLink.objects.get(pk=created.json()["id"])
    assert link.token_hash == hashlib.sha256(token.encode()).hexdigest() and link.prefix == token[:12]
    for row in UploadLink.objects.values():
        assert all(token not in str(value) for value in row.values())
    for event in AuditEvent.objects.all():
        assert token not in str(event.details) and token not in event.object_repr
    with connection.cursor() as cursor:  # nowhere in the link table, in any column
        cursor.execute("SELECT * FROM storage_uploadlink")
        assert token not in str(cursor.fetchall())
    for url in ("/api/v1/upload-links/", f"/api/v1/upload-links/{link.pk}/"):
        response = owner.get(url)
        assert response.status_code == 200 and token not in response.content.decode()
    # The address works, and so does the secret.
    assert with_token(token).get(UPLOAD).status_code == 200


# --- refusals -------------------------------------------------------------------------------------------


def link_endpoints(handle: str, piece: bytes):
    """Every request a link can make, as (label, send(client))."""
    return [
        ("info", lambda c: c.get(UPLOAD)),
        ("start", lambda c: start(c, piece)),
        ("chunks", lambda c: c.get(f"{UPLOAD}datasets/{handle}/chunks/")),
        ("chunk", lambda c: put(c, handle, 0, piece)),
        ("finish", lambda c: finish(c, handle)),
    ]


def test_missing_unknown_expired_and_revoked_links_are_refused_everywhere(keyed):
    piece = os.urandom(1000)
    expiring, expiring_token = make_link(keyed)
    revoked, revoked_token = make_link(keyed)
    handles = {}
    for link, token in ((expiring, expiring_token), (revoked, revoked_token)):
        handles[link.pk] = start(with_token(token), piece).json()["upload"]
    UploadLink.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    links.revoke_link(revoked, actor=keyed["owner"])

    cases = [
        (None, handles[expiring.pk], 401, "link_missing"),
        ("", handles[expiring.pk], 401, "link_missing"),
        ("rdu_" + "x" * 43, handles[expiring.pk], 401, "link_unknown"),
        (expiring_token + "x", handles[expiring.pk], 401, "link_unknown"),
        (expiring_token, handles[expiring.pk], 403, "link_expired"),
        (revoked_token, handles[revoked.pk], 403, "link_revoked"),
    ]
    for token, handle, status, code in cases:
        for label, call in link_endpoints(handle, piece):
            body = assert_clear(call(with_token(token)), status, code)
            assert label and ("expired on" in body["detail"] if code == "link_expired" else True)
    assert UploadLink.objects.get(pk=expiring.pk).used_files == 1  # nothing more was started
    assert Dataset.objects.count() == 2 and not Dataset.objects.filter(chunks__isnull=False).exists()
    refusals = AuditEvent.objects.filter(action="storage.upload_link_refused")
    reasons = sorted(e.details["reason"] for e in refusals)
    assert reasons == sorted(["unknown"] * 10 + ["link_expired"] * 5 + ["link_revoked"] * 5)
    assert "revoked by its owner" in assert_clear(with_token(revoked_token).get(UPLOAD), 403)["detail"]


def test_a_link_reaches_only_the_unfinished_uploads_started_through_it(keyed, api):
    piece = os.urandom(1000)
    _, token_a = make_link(keyed)
    _, token_b = make_link(keyed, label="Other facility")
    _, token_c = make_link(keyed, "stranger", label="A stranger's link")
    handle = start(with_token(token_a), piece).json()["upload"]
    mnemonic = handle.split(".")[0]
    owners = upload(api("owner"), os.urandom(1000))
    other_owners_handle = start(with_token(token_b), piece).json()["upload"]
    forged = f"{owners}.{other_owners_handle.split('.', 1)[1]}"
    for token, target in (
        (token_b, handle),  # another link of the same owner
        (token_c, handle),  # another person's link
        (token_a, mnemonic),  # the bare mnemonic
        (token_a, owners),  # the owner's own dataset
        (token_a, forged),  # a signature made for another link
        (token_a, other_owners_handle),
        (token_a, "x" * 300),
        (token_a, "calm_brave_otter.AAAA"),
    ):
        client = with_token(token)
        assert_clear(client.get(f"{UPLOAD}datasets/{target}/chunks/"), 404, "not_found")
        assert_clear(put(client, target, 0, piece), 404, "not_found")
        assert_clear(finish(client, target), 404, "not_found")
    assert not Dataset.objects.filter(mnemonic=mnemonic, chunks__isnull=False).exists()


def api_operations():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, item in schema["paths"].items():
        if path.startswith("/api/v1/upload-links/upload/"):
            continue
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                yield path, method


def ask(client, method: str, url: str, data: bytes):
    if method == "get":
        return client.get(url, {"first_chunk_sha256": sha(data[:CHUNK]), "ids": "1"})
    if method == "put" and "/chunks/" in url:
        return client.put(url, data[:CHUNK], content_type="application/octet-stream")
    body = {"key": "A" * 43 + "=", "user": "owner", "level": "read", "name": "x"}
    return getattr(client, method)(url, body, format="json")


def test_a_link_cannot_list_read_or_download_anything(keyed, api, private_keys):
    """Every other API endpoint, with the link's secret in the header or as a bearer token: 401/403."""
    data = os.urandom(CHUNK + 10)
    link, token = make_link(keyed)
    through_link = send(with_token(token), data)["upload"].split(".")[0]
    owners = upload(api("owner"), data, "owners.bin")
    mnemonics = (through_link, owners)
    operations = list(api_operations())
    assert any("/datasets/{mnemonic}/content/" in p for p, _ in operations)
    assert any(p == "/api/v1/datasets/" for p, _ in operations)
    for mnemonic in mnemonics:
        for path, method in operations:
            url = path.replace("{mnemonic}", mnemonic).replace("{id}", str(link.pk))
            url = re.sub(r"\{[^}]+\}", "0", url)
            for client in (with_token(token), APIClient(headers={"Authorization": f"Bearer {token}"})):
                response = ask(client, method, url, data)
                assert response.status_code in REFUSED, (method, url, response.status_code)
                content = response.content
                assert data[:64] not in content and all(m.encode() not in content for m in mnemonics)
    assert not AuditEvent.objects.filter(action="storage.downloaded").exists()
    assert Dataset.objects.get(mnemonic=owners).state == DatasetState.AVAILABLE


# --- limits ----------------------------------------------------------------------------------------------


def test_file_and_size_limits(keyed):
    _, token = make_link(keyed, max_files=2)
    client = with_token(token)
    assert start(client, b"a" * 10).status_code == 201
    assert start(client, b"b" * 10).status_code == 201
    body = assert_clear(start(client, b"c" * 10), 403, "link_file_limit")
    assert "at most 2 file(s)" in body["detail"]

    link, token = make_link(keyed, max_bytes=100_000)
    client = with_token(token)
    assert start(client, b"a" * 60_000).status_code == 201
    body = assert_clear(start(client, b"b" * 50_000), 413, "link_size_limit")
    assert "still takes (40,000 of 100,000 bytes)" in body["detail"]
    assert start(client, b"c" * 40_000).status_code == 201
    assert_clear(start(client, b"d"), 413, "link_size_limit")
    link.refresh_from_db()
    assert (link.used_files, link.used_bytes) == (2, 100_000)
    assert with_token(token).get(UPLOAD).json()["remaining_bytes"] == 0
    assert Dataset.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_limits_hold_when_uploads_start_at_once(keyed):
    link, token = make_link(keyed, max_files=3, max_bytes=10_000)
    answers: list[int] = []
    barrier = threading.Barrier(8)

    def attempt():
        try:
            client = with_token(token)
            barrier.wait()
            answers.append(start(client, b"z" * 1000).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [201] * 3 + [403] * 5
    link.refresh_from_db()
    assert (link.used_files, link.used_bytes) == (3, 3000)
    assert Dataset.objects.filter(upload_link=link).count() == 3


def test_an_owner_without_an_active_key_gets_no_uploads(keyed):
    from storage.models import KeyState, UserKey

    _, token = make_link(keyed)
    UserKey.objects.filter(user=keyed["owner"]).update(state=KeyState.REVOKED)
    assert_clear(start(with_token(token), b"x"), 409, "owner_has_no_key")
    assert not Dataset.objects.exists()


def test_revoking_stops_an_upload_in_flight(keyed):
    piece = os.urandom(1000)
    link, token = make_link(keyed)
    client = with_token(token)
    handle = start(client, piece).json()["upload"]
    links.revoke_link(link, actor=keyed["owner"])
    assert_clear(put(client, handle, 0, piece), 403, "link_revoked")
    assert_clear(finish(client, handle), 403, "link_revoked")
    assert Dataset.objects.get().state == DatasetState.UPLOADING


# --- bad input -----------------------------------------------------------------------------------------


def test_bad_uploads_are_clear_4xx_and_store_nothing(keyed):
    _, token = make_link(keyed)
    client = with_token(token)
    url = f"{UPLOAD}datasets/"
    for body, field in (
        ({"size": 10}, "file_name"),
        ({"file_name": "a.txt"}, "size"),
        ({"file_name": "a.txt", "size": -1}, "size"),
        ({"file_name": "a.txt", "size": "ten"}, "size"),
        ({"file_name": "../etc/passwd", "size": 1}, "file_name"),
        ({"file_name": "a.txt", "size": 1, "first_chunk_sha256": "nothex"}, "first_chunk_sha256"),
        ({"file_name": "a.txt", "size": 1, "project": 1}, "project"),
        ({"file_name": "a.txt", "size": 1, "owner": "stranger"}, "owner"),
    ):
        assert field in assert_clear(client.post(url, body, format="json"), 400)["errors"]
    assert_clear(client.post(url, '{"file_name": ', content_type="application/json"), 400)
    assert_clear(client.post(url, "[1]", content_type="application/json"), 400)
    assert_clear(client.post(url, {"file_name": "a", "size": 10, "chunk_size": 5}, format="json"), 400)
    assert_clear(client.post(url, {"file_name": "a", "size": 2**60}, format="json"), 413, "too_large")
    assert not Dataset.objects.exists()

    data = os.urandom(CHUNK + 5)
    handle = start(client, data).json()["upload"]
    part = pieces(data)[0]
    assert_clear(put(client, handle, 0, part, digest=sha(b"other")), 400, "hash_mismatch")
    assert_clear(put(client, handle, 0, part, digest="nothex"), 400, "invalid_hash")
    assert_clear(put(client, handle, 0, part[:-1]), 400, "wrong_size")
    assert_clear(put(client, handle, 2, part), 400, "invalid_index")
    assert_clear(put(client, handle, "x", part), 400, "invalid_index")
    assert_clear(put(client, handle, "²", part), 400, "invalid_index")
    assert_clear(put(client, handle, 0, part + b"xxxxxx"), 413, "too_large")
    assert_clear(put(client, handle, 0, b'{"a": 1}', content_type="application/json"), 415)
    assert_clear(finish(client, handle, {"key": "A" * 44}), 400)
    assert_clear(client.post(f"{UPLOAD}datasets/{handle}/finish/", "[", content_type="application/json"), 400)
    assert not Dataset.objects.get().chunks.exists()
    assert_clear(client.delete(url), 405)
    assert_clear(client.get(url), 405)  # the link lists nothing


def test_bad_link_requests_are_clear_4xx(keyed, api, people):
    owner = api("owner")
    later = (timezone.now() + dt.timedelta(days=3)).isoformat()
    for body, where in (
        ({"expires_at": later}, "label"),
        ({"label": "", "expires_at": later}, "label"),
        ({"label": "x" * 201, "expires_at": later}, "label"),
        ({"label": "x"}, "expires_at"),
        ({"label": "x", "expires_at": "tomorrow"}, "expires_at"),
        ({"label": "x", "expires_at": later, "max_bytes": 0}, "max_bytes"),
        ({"label": "x", "expires_at": later, "max_files": "many"}, "max_files"),
        ({"label": "x", "expires_at": later, "token": "mine"}, "token"),
    ):
        assert where in assert_clear(owner.post("/api/v1/upload-links/", body, format="json"), 400)["errors"]
    for expires, message in (
        (timezone.now() - dt.timedelta(days=1), "must be in the future"),
        (timezone.now() + dt.timedelta(days=4000), "at most 365 days"),
    ):
        response = owner.post(
            "/api/v1/upload-links/", {"label": "x", "expires_at": expires.isoformat()}, format="json"
        )
        assert message in assert_clear(response, 400)["detail"]
    from storage.models import UserKey

    UserKey.objects.filter(user=people["owner"]).delete()
    response = owner.post("/api/v1/upload-links/", {"label": "x", "expires_at": later}, format="json")
    assert_clear(response, 400, "no_active_key")
    assert not UploadLink.objects.exists()


# --- managing links, per role ------------------------------------------------------------------------


def test_listing_links_shows_only_your_own(keyed, api):
    link, _ = make_link(keyed)
    make_link(keyed, "stranger", label="stranger's")
    expected = {"stranger": ["stranger's"], "reader": [], "writer": [], "owner": [link.label], "admin": []}
    for role in ROLES:
        response = api(role).get("/api/v1/upload-links/")
        if role == "anonymous":
            assert_clear(response, REFUSED)
            continue
        assert response.status_code == 200
        assert [row["label"] for row in response.json()["results"]] == expected[role]
        everyone = api(role).get("/api/v1/upload-links/?all=1").json()["results"]
        assert len(everyone) == (2 if role == "admin" else len(expected[role]))


@pytest.mark.parametrize("role", ROLES)
def test_one_link_its_uses_and_revoking_per_role(keyed, api, role):
    link, token = make_link(keyed)
    send(with_token(token), b"hello")
    client = api(role)
    detail = client.get(f"/api/v1/upload-links/{link.pk}/")
    uses = client.get(f"/api/v1/upload-links/{link.pk}/uses/")
    revoke = client.post(f"/api/v1/upload-links/{link.pk}/revoke/")
    if role == "anonymous":
        for response in (detail, uses, revoke):
            assert_clear(response, REFUSED)
    elif role in ("owner", "admin"):
        assert (
            detail.status_code == 200 and detail.json()["state"] == "active" and "token" not in detail.json()
        )
        assert [u["file_name"] for u in uses.json()] == ["run42.fastq.gz"]
        assert revoke.status_code == 200 and revoke.json()["state"] == "revoked"
        assert_clear(client.post(f"/api/v1/upload-links/{link.pk}/revoke/"), 409, "already_revoked")
        event = AuditEvent.objects.get(action="storage.upload_link_revoked")
        assert event.actor == keyed[role]
        assert_clear(with_token(token).get(UPLOAD), 403, "link_revoked")
    else:
        for response in (detail, uses, revoke):
            assert_clear(response, 404, "not_found")
    assert UploadLink.objects.get().revoked_at is None or role in ("owner", "admin")
    assert_clear(client.delete(f"/api/v1/upload-links/{link.pk}/"), (401, 403, 404, 405))
    assert_clear(
        client.patch(f"/api/v1/upload-links/{link.pk}/", {"label": "y"}, format="json"), (401, 403, 404, 405)
    )


@pytest.mark.parametrize("role", ROLES)
def test_creating_a_link_per_role(keyed, api, role):
    later = (timezone.now() + dt.timedelta(days=3)).isoformat()
    response = api(role).post(
        "/api/v1/upload-links/", {"label": "x", "expires_at": later, "max_files": 2}, format="json"
    )
    if role == "anonymous":
        assert_clear(response, REFUSED)
        assert not UploadLink.objects.exists()
        return
    assert response.status_code == 201
    link = UploadLink.objects.get()
    assert link.owner == keyed[role] and link.max_files == 2 and link.max_bytes is None
    event = AuditEvent.objects.get(action="storage.upload_link_created")
    assert event.actor == keyed[role] and response.json()["token"] not in str(event.details)
    # The link uploads for its creator.
    send(with_token(response.json()["token"]), b"data")
    assert Dataset.objects.get().owner == keyed[role]


def test_a_read_only_api_token_cannot_make_links(keyed):
    from portal.services.tokens import create_api_token

    _, secret = create_api_token(
        keyed["owner"], name="t", scopes=["read"], expires_at=timezone.now() + dt.timedelta(days=1)
    )
    client = APIClient(headers={"Authorization": f"Bearer {secret}"})
    assert client.get("/api/v1/upload-links/").status_code == 200
    later = (timezone.now() + dt.timedelta(days=3)).isoformat()
    response = client.post("/api/v1/upload-links/", {"label": "x", "expires_at": later}, format="json")
    assert "lacks the scope(s) write" in assert_clear(response, 403)["detail"]


# --- pages -------------------------------------------------------------------------------------------------


def test_the_upload_page_needs_no_account_and_explains_refusals(keyed, client):
    link, token = make_link(keyed, max_files=5)
    page = client.get(f"/upload/{token}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Send files to owner" in html and "Sequencing facility" in html and "5 files" in html
    assert 'data-api="/api/v1/upload-links/upload/"' in html and "storage/link_upload.js" in html
    assert page["Referrer-Policy"] == "no-referrer" and page["Cache-Control"] == "no-store"
    assert AuditEvent.objects.filter(action="storage.upload_link_used", details__operation="page").exists()

    unknown = client.get("/upload/rdu_nothing/")
    assert unknown.status_code == 404 and "check that you copied the whole link" in unknown.content.decode()
    UploadLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - dt.timedelta(hours=1))
    expired = client.get(f"/upload/{token}/")
    assert expired.status_code == 403 and "This upload link has expired" in expired.content.decode()
    links.revoke_link(link, actor=keyed["owner"])
    revoked = client.get(f"/upload/{token}/")
    assert revoked.status_code == 403 and "revoked by its owner" in revoked.content.decode()
    assert token not in revoked.content.decode()


def test_the_links_page_creates_shows_once_and_revokes(keyed, web):
    anonymous = web("anonymous").get("/upload-links/")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    owner = web("owner")
    assert owner.get("/upload-links/").status_code == 200
    day = (timezone.localdate() + dt.timedelta(days=5)).isoformat()
    created = owner.post(
        "/upload-links/", {"label": "Facility", "expires_on": day, "max_size": "1.5 GB", "max_files": "3"}
    )
    assert created.status_code == 200
    link = UploadLink.objects.get()
    assert (link.max_bytes, link.max_files, link.label) == (1_500_000_000, 3, "Facility")
    match = re.search(r'value="(http://testserver/upload/(rdu_[^/"]+)/)"', created.content.decode())
    assert match and hashlib.sha256(match.group(2).encode()).hexdigest() == link.token_hash
    again = owner.get("/upload-links/").content.decode()
    assert "Facility" in again and match.group(2) not in again and link.prefix in again

    for body, message in (
        ({"label": "x", "expires_on": day, "max_size": "lots"}, "Write a size such as"),
        ({"label": "x", "expires_on": day, "max_size": "5 XB"}, "Write a size such as"),
        ({"label": "x", "expires_on": day, "max_files": "0"}, "greater than or equal to 1"),
        ({"label": "", "expires_on": day}, "This field is required"),
        ({"label": "x", "expires_on": "2001-01-01"}, "must be in the future"),
    ):
        response = owner.post("/upload-links/", body)
        assert response.status_code == 400 and message in response.content.decode()
    assert UploadLink.objects.count() == 1

    assert web("stranger").post(f"/upload-links/{link.pk}/revoke/").status_code == 404
    revoked = owner.post(f"/upload-links/{link.pk}/revoke/", follow=True)
    assert revoked.status_code == 200 and "revoked" in revoked.content.decode()
    assert UploadLink.objects.get().revoked_at is not None
