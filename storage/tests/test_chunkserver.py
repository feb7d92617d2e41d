"""Upload chunks taken in front of Django (`storage/chunkserver.py`): the same answers as the API
view for every role and every refusal, the write grant checked with every chunk, and what it stores
is what the view would store (the finished dataset downloads byte for byte). Each such test runs
twice: calling the ASGI application as a server does, and through a real uvicorn server with the
portal's HTTP protocol, which receives these bodies straight into the chunk server's buffers
(`portal/httpserver.py`)."""

from __future__ import annotations

import datetime as dt
import http.client

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator
from django.utils import timezone

from conftest import uvicorn_in_thread
from portal.services.tokens import create_api_token
from storage import chunkserver
from storage.models import Chunk, Dataset, DatasetState, Grant, GrantLevel
from storage.services import chunkstore
from storage.tests.helpers import CHUNK, key_header, pieces, put, sha, start, unwrap

# The chunk path works in threads of its own, with connections of their own: they see only
# committed rows, so these tests commit theirs.
pytestmark = pytest.mark.django_db(transaction=True)

ROLES = ["anonymous", "stranger", "reader", "writer", "owner", "admin"]
DATA = bytes(range(256)) * (3 * CHUNK // 256)  # three chunks


@pytest.fixture
def app(monkeypatch):
    from portal.asgi import application

    chunkserver.clear_caches()
    taken = []
    store = chunkserver.store

    def counting(*args):
        taken.append(args[1])
        return store(*args)

    monkeypatch.setattr(chunkserver, "store", counting)
    application.taken = taken  # indexes of the chunks the fast path stored or refused itself
    yield application
    chunkserver.clear_caches()


@pytest.fixture(scope="module")
def served(django_db_setup, django_db_blocker):
    """The portal's application under uvicorn with the portal's HTTP protocol, in a thread of this
    process (so the tests' stand-ins for `store` see what it does); its port."""
    from portal.asgi import application

    with django_db_blocker.unblock(), uvicorn_in_thread(application) as port:
        yield port


class Sender:
    """`send` as the application is called by a server, or through uvicorn itself; `claims`: the
    bodies the HTTP protocol received straight into the chunk server's buffers."""

    def __init__(self, app, port: int | None):
        self.app, self.port, self.claims = app, port, []

    def __call__(self, *args, **kwargs):
        if self.port is None:
            return send(self.app, *args, **kwargs)
        return send_http(self.port, *args, **kwargs)


@pytest.fixture(params=["asgi", "uvicorn"])
def sender(request, app, monkeypatch):
    if request.param == "asgi":
        return Sender(app, None)
    from portal import httpserver

    sender = Sender(app, request.getfixturevalue("served"))

    class CountedClaim(httpserver.BodyClaim):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            sender.claims.append(self)

    monkeypatch.setattr(httpserver, "BodyClaim", CountedClaim)
    return sender


@pytest.fixture
def uploading(keyed, api):
    """An unfinished upload of the owner's; the writer and the reader hold grants on it too."""
    mnemonic = start(api("owner"), DATA).json()["mnemonic"]
    dataset = Dataset.objects.get(mnemonic=mnemonic)
    Grant.objects.create(
        dataset=dataset, user=keyed["writer"], level=GrantLevel.WRITE, granted_by=keyed["owner"]
    )
    Grant.objects.create(
        dataset=dataset, user=keyed["reader"], level=GrantLevel.READ, granted_by=keyed["owner"]
    )
    return dataset


def token_of(user, scopes=("read", "write")) -> str:
    _, secret = create_api_token(
        user, name="chunks", scopes=list(scopes), expires_at=timezone.now() + dt.timedelta(hours=1)
    )
    return secret


def send(app, mnemonic, index, body, token=None, digest=None, extra=()):
    headers = [
        ("host", "testserver"),
        ("content-type", "application/octet-stream"),
        ("content-length", str(len(body))),
        ("x-content-sha256", digest or sha(body)),
        *extra,
    ]
    if token:
        headers.append(("authorization", f"Bearer {token}"))
    communicator = HttpCommunicator(
        app,
        "PUT",
        f"/api/v1/datasets/{mnemonic}/chunks/{index}/",
        body=body,
        headers=[(k.lower().encode(), v.encode()) for k, v in headers],  # as ASGI servers pass them
    )
    return async_to_sync(communicator.get_response)()


def send_http(port, mnemonic, index, body, token=None, digest=None, extra=()):
    """`send` through a real HTTP server on `port`."""
    headers = {"Content-Type": "application/octet-stream", "X-Content-SHA256": digest or sha(body)}
    headers.update(dict(extra))
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("PUT", f"/api/v1/datasets/{mnemonic}/chunks/{index}/", body=body, headers=headers)
        response = connection.getresponse()
        return {"status": response.status, "body": response.read()}
    finally:
        connection.close()


def status_and_code(response) -> tuple[int, str | None]:
    import json

    body = json.loads(response["body"]) if response["body"].startswith(b"{") else {}
    return response["status"], body.get("code")


@pytest.mark.parametrize("role", ROLES)
def test_every_role_gets_the_views_answer(sender, role, app, uploading, keyed, api):
    piece = pieces(DATA)[0]
    token = None if role == "anonymous" else token_of(keyed[role])
    fast = sender(uploading.mnemonic, 0, piece, token)
    view = put(api(role), uploading.mnemonic, 0, piece)
    assert fast["status"] == view.status_code, (role, fast["body"][:200], view.content[:200])
    assert fast["status"] == {"anonymous": 401, "stranger": 404, "reader": 403, "admin": 403}.get(role, 200)
    # A bad chunk tells those who may not write nothing more than a good one.
    bad = sender(uploading.mnemonic, 1, piece[:-1], token)
    assert bad["status"] == (400 if role in ("writer", "owner") else fast["status"]), bad["body"][:200]
    if sender.port is not None:  # every request with a token, received into a kept buffer
        received = [claim.received for claim in sender.claims]
        assert received == ([] if token is None else [len(piece), len(piece) - 1])
    if role in ("writer", "owner"):
        assert app.taken == [0, 1]  # stored (and refused) by the fast path, not the view
        row = Chunk.objects.get(dataset=uploading, index=0)
        assert row.sha256 == sha(piece) and row.size == len(piece)


def test_refusals_match_the_view_and_store_nothing(sender, app, uploading, keyed, api):
    owner = token_of(keyed["owner"])
    piece = pieces(DATA)[1]
    cases = {
        "hash_mismatch": dict(index=1, body=piece, digest=sha(b"other")),
        "wrong_size": dict(index=1, body=piece[:-1], digest=sha(piece[:-1])),
        "invalid_index": dict(index=3, body=piece, digest=sha(piece)),
        "invalid_hash": dict(index=1, body=piece, digest="not-a-hash"),
    }
    for code, case in cases.items():
        fast = sender(uploading.mnemonic, case["index"], case["body"], owner, case["digest"])
        view = put(api("owner"), uploading.mnemonic, case["index"], case["body"], case["digest"])
        assert status_and_code(fast) == (400, code) == (view.status_code, view.json()["code"]), code
    assert not Chunk.objects.filter(dataset=uploading).exists()
    # A token without the write scope, and a key in the request, are the view's to answer.
    taken = len(app.taken)
    read_only = sender(uploading.mnemonic, 1, piece, token_of(keyed["owner"], ("read",)))
    assert read_only["status"] == 403
    assert sender(uploading.mnemonic, 1, piece, "rdp_nonsense")["status"] == 401
    assert len(app.taken) == taken


def test_what_it_stores_downloads_byte_for_byte_and_late_chunks_are_refused(
    sender, app, uploading, keyed, api, private_keys
):
    owner = token_of(keyed["owner"])
    for index, piece in enumerate(pieces(DATA)):
        assert sender(uploading.mnemonic, index, piece, owner)["status"] == 200
    assert sender(uploading.mnemonic, 0, pieces(DATA)[0], owner)["status"] == 200  # sent again
    assert app.taken == [0, 1, 2, 0]
    client = api("owner")
    finished = client.post(f"/api/v1/datasets/{uploading.mnemonic}/finish/", {}, format="json")
    assert finished.status_code == 200, finished.content
    key = unwrap(client, uploading.mnemonic, private_keys["owner"])
    content = client.get(f"/api/v1/datasets/{uploading.mnemonic}/content/", headers=key_header(key))
    assert b"".join(content.streaming_content) == DATA
    # The dataset is available now: a chunk sent late changes nothing, whoever's cache is warm.
    late = sender(uploading.mnemonic, 1, pieces(DATA)[0], owner, extra=())
    assert late["status"] == 409
    content = client.get(f"/api/v1/datasets/{uploading.mnemonic}/content/", headers=key_header(key))
    assert b"".join(content.streaming_content) == DATA


def test_the_write_grant_is_checked_with_every_chunk(sender, app, uploading, keyed):
    writer = token_of(keyed["writer"])
    assert sender(uploading.mnemonic, 0, pieces(DATA)[0], writer)["status"] == 200
    Grant.objects.filter(dataset=uploading, user=keyed["writer"]).delete()
    # The token and the upload's details are still cached; the grant is not.
    refused = sender(uploading.mnemonic, 1, pieces(DATA)[1], writer)
    assert refused["status"] == 404  # as the view answers someone without a grant
    assert not Chunk.objects.filter(dataset=uploading, index=1).exists()


def test_a_supplied_key_and_other_requests_go_to_the_view(sender, app, uploading, keyed, api, private_keys):
    owner = token_of(keyed["owner"])
    key = unwrap(api("owner"), uploading.mnemonic, private_keys["owner"])
    header = next(iter(key_header(key).items()))
    assert sender(uploading.mnemonic, 0, pieces(DATA)[0], owner, extra=[header])["status"] == 200
    assert app.taken == []  # the view took it (and sealed the key again)
    Dataset.objects.filter(pk=uploading.pk).update(state=DatasetState.DELETED)
    gone = sender(uploading.mnemonic, 1, pieces(DATA)[1], owner)
    assert gone["status"] == 409 and app.taken == []  # not uploading: the view says so


def session_headers(user, csrf: bool = True) -> list[tuple[str, str]]:
    from django.middleware.csrf import _get_new_csrf_string
    from django.test import Client

    client = Client()
    client.force_login(user)
    secret = _get_new_csrf_string()
    cookie = f"sessionid={client.cookies['sessionid'].value}; csrftoken={secret}"
    return [("cookie", cookie)] + ([("x-csrftoken", secret)] if csrf else [])


@pytest.mark.parametrize(
    ("role", "csrf", "status", "taken"),
    [("owner", True, 200, True), ("owner", False, 403, False), ("reader", True, 403, False)],
)
def test_browser_sessions_with_their_csrf_token(sender, app, uploading, keyed, role, csrf, status, taken):
    """The upload page's requests (session cookie and CSRF token) take the same path; without the
    token Django's CSRF check refuses them, as the view would."""
    response = sender(uploading.mnemonic, 0, pieces(DATA)[0], extra=session_headers(keyed[role], csrf))
    assert response["status"] == status, response["body"][:200]
    if not csrf:
        assert b"CSRF" in response["body"]
    assert app.taken == ([0] if taken else [])


def test_a_dataset_removed_while_its_details_are_cached_is_a_clear_404(sender, app, uploading, keyed):
    owner = token_of(keyed["owner"])
    assert sender(uploading.mnemonic, 0, pieces(DATA)[0], owner)["status"] == 200
    Dataset.objects.filter(pk=uploading.pk).delete()  # e.g. by an administrator
    gone = sender(uploading.mnemonic, 1, pieces(DATA)[1], owner)
    assert status_and_code(gone) == (404, "not_found")


def chunk_scope(mnemonic: str, index: int, body: bytes, token: str) -> dict:
    headers = [
        ("host", "testserver"),
        ("content-length", str(len(body))),
        ("x-content-sha256", sha(body)),
        ("authorization", f"Bearer {token}"),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": f"/api/v1/datasets/{mnemonic}/chunks/{index}/",
        "raw_path": f"/api/v1/datasets/{mnemonic}/chunks/{index}/".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }


async def put_in_pieces(app, scope: dict, body: bytes, parts: int = 7, disconnect_after: int | None = None):
    """Send `body` as an HTTP server does, in several messages, letting other requests run between
    them; the response's (status, body). `disconnect_after`: the client goes away after that many."""
    import asyncio

    size = -(-len(body) // parts)
    messages = [body[i : i + size] for i in range(0, len(body), size)]
    sent = 0
    answer = {}

    async def receive():
        nonlocal sent
        await asyncio.sleep(0)
        if disconnect_after is not None and sent >= disconnect_after:
            return {"type": "http.disconnect"}
        sent += 1
        return {"type": "http.request", "body": messages[sent - 1], "more_body": sent < len(messages)}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        else:
            answer["body"] = answer.get("body", b"") + message.get("body", b"")

    await app(scope, receive, send)
    return answer.get("status"), answer.get("body")


def test_bodies_in_pieces_side_by_side_are_stored_as_sent(app, uploading, keyed, api, private_keys):
    """Bodies are received into kept buffers: chunks arriving in pieces at the same time, then again
    in reverse with other buffers taken, are each stored as sent (the last one is shorter than the
    buffer it gets); a client gone halfway stores nothing."""
    import asyncio

    owner = token_of(keyed["owner"])
    chunks = pieces(DATA)
    first = chunks[:2] + [chunks[2][:-5] + b"xxxxx"]  # the last chunk first sent with other bytes

    async def all_at_once(bodies, order):
        return await asyncio.gather(
            *(
                put_in_pieces(app, chunk_scope(uploading.mnemonic, i, bodies[i], owner), bodies[i])
                for i in order
            )
        )

    assert [s for s, _ in async_to_sync(all_at_once)(first, [0, 1, 2])] == [200, 200, 200]
    assert [s for s, _ in async_to_sync(all_at_once)(chunks, [2, 1, 0])] == [200, 200, 200]
    gone = async_to_sync(put_in_pieces)(
        app, chunk_scope(uploading.mnemonic, 0, chunks[1], owner), chunks[1], disconnect_after=3
    )
    assert gone == (None, None)
    assert sorted(app.taken) == [0, 0, 1, 1, 2, 2]  # all by the fast path, none after the client left
    assert {c.index: c.sha256 for c in Chunk.objects.filter(dataset=uploading)} == {
        i: sha(c) for i, c in enumerate(chunks)
    }
    client = api("owner")
    assert client.post(f"/api/v1/datasets/{uploading.mnemonic}/finish/", {}, format="json").status_code == 200
    key = unwrap(client, uploading.mnemonic, private_keys["owner"])
    content = client.get(f"/api/v1/datasets/{uploading.mnemonic}/content/", headers=key_header(key))
    assert b"".join(content.streaming_content) == DATA


def test_a_cancelled_request_keeps_its_buffer_until_the_chunk_is_stored(app, uploading, keyed, monkeypatch):
    """The thread storing a chunk reads the request's buffer: a request cancelled meanwhile (the
    server shutting down) gives it back for the next request only once that thread is done."""
    import asyncio
    import threading

    owner = token_of(keyed["owner"])
    piece = pieces(DATA)[0]
    storing, release = threading.Event(), threading.Event()
    store = chunkserver.store

    def slow_store(*args):
        storing.set()
        assert release.wait(30)
        return store(*args)

    monkeypatch.setattr(chunkserver, "store", slow_store)
    monkeypatch.setattr(chunkserver, "_bodies", chunkstore.KeptBuffers(keep_bytes=1024 * 1024))

    async def cancel_then_finish():
        loop = asyncio.get_running_loop()
        request = asyncio.ensure_future(
            put_in_pieces(app, chunk_scope(uploading.mnemonic, 0, piece, owner), piece)
        )
        assert await loop.run_in_executor(None, storing.wait, 30)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        kept_while_storing = len(chunkserver._bodies._free)
        release.set()
        for _ in range(500):
            if chunkserver._bodies._free:
                break
            await asyncio.sleep(0.01)
        return kept_while_storing, len(chunkserver._bodies._free)

    assert async_to_sync(cancel_then_finish)() == (0, 1)
    assert Chunk.objects.get(dataset=uploading, index=0).sha256 == sha(piece)


def test_body_buffers_are_reused_up_to_their_limit():
    buffers = chunkstore.KeptBuffers(keep_bytes=300)
    first, second = buffers.take(100), buffers.take(200)
    assert len(first) == 100 and len(second) == 200
    buffers.give(first)
    buffers.give(second)
    buffers.give(bytearray(50))  # over the limit: let go
    assert buffers.take(150) is second  # the first one large enough
    assert buffers.take(80) is first
    assert len(buffers.take(80)) == 80  # none left: a new one


def test_an_empty_file_is_one_empty_chunk_on_the_fast_path(sender, app, keyed, api, private_keys):
    client = api("owner")
    mnemonic = start(client, b"").json()["mnemonic"]
    sent = sender(mnemonic, 0, b"", token_of(keyed["owner"]))
    assert sent["status"] == 200, sent["body"][:200]
    assert app.taken == [0]
    assert client.post(f"/api/v1/datasets/{mnemonic}/finish/", {}, format="json").status_code == 200
    key = unwrap(client, mnemonic, private_keys["owner"])
    content = client.get(f"/api/v1/datasets/{mnemonic}/content/", headers=key_header(key))
    assert b"".join(content.streaming_content) == b""
