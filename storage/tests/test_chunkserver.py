"""Upload chunks taken in front of Django (`storage/chunkserver.py`): the same answers as the API
view for every role and every refusal, the write grant checked with every chunk, and what it stores
is what the view would store (the finished dataset downloads byte for byte)."""

from __future__ import annotations

import datetime as dt

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator
from django.utils import timezone

from portal.services.tokens import create_api_token
from storage import chunkserver
from storage.models import Chunk, Dataset, DatasetState, Grant, GrantLevel
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


def status_and_code(response) -> tuple[int, str | None]:
    import json

    body = json.loads(response["body"]) if response["body"].startswith(b"{") else {}
    return response["status"], body.get("code")


@pytest.mark.parametrize("role", ROLES)
def test_every_role_gets_the_views_answer(role, app, uploading, keyed, api):
    piece = pieces(DATA)[0]
    token = None if role == "anonymous" else token_of(keyed[role])
    fast = send(app, uploading.mnemonic, 0, piece, token)
    view = put(api(role), uploading.mnemonic, 0, piece)
    assert fast["status"] == view.status_code, (role, fast["body"][:200], view.content[:200])
    assert fast["status"] == {"anonymous": 401, "stranger": 404, "reader": 403, "admin": 403}.get(role, 200)
    # A bad chunk tells those who may not write nothing more than a good one.
    bad = send(app, uploading.mnemonic, 1, piece[:-1], token)
    assert bad["status"] == (400 if role in ("writer", "owner") else fast["status"]), bad["body"][:200]
    if role in ("writer", "owner"):
        assert app.taken == [0, 1]  # stored (and refused) by the fast path, not the view
        row = Chunk.objects.get(dataset=uploading, index=0)
        assert row.sha256 == sha(piece) and row.size == len(piece)


def test_refusals_match_the_view_and_store_nothing(app, uploading, keyed, api):
    owner = token_of(keyed["owner"])
    piece = pieces(DATA)[1]
    cases = {
        "hash_mismatch": dict(index=1, body=piece, digest=sha(b"other")),
        "wrong_size": dict(index=1, body=piece[:-1], digest=sha(piece[:-1])),
        "invalid_index": dict(index=3, body=piece, digest=sha(piece)),
        "invalid_hash": dict(index=1, body=piece, digest="not-a-hash"),
    }
    for code, case in cases.items():
        fast = send(app, uploading.mnemonic, case["index"], case["body"], owner, case["digest"])
        view = put(api("owner"), uploading.mnemonic, case["index"], case["body"], case["digest"])
        assert status_and_code(fast) == (400, code) == (view.status_code, view.json()["code"]), code
    assert not Chunk.objects.filter(dataset=uploading).exists()
    # A token without the write scope, and a key in the request, are the view's to answer.
    taken = len(app.taken)
    read_only = send(app, uploading.mnemonic, 1, piece, token_of(keyed["owner"], ("read",)))
    assert read_only["status"] == 403
    assert send(app, uploading.mnemonic, 1, piece, "rdp_nonsense")["status"] == 401
    assert len(app.taken) == taken


def test_what_it_stores_downloads_byte_for_byte_and_late_chunks_are_refused(
    app, uploading, keyed, api, private_keys
):
    owner = token_of(keyed["owner"])
    for index, piece in enumerate(pieces(DATA)):
        assert send(app, uploading.mnemonic, index, piece, owner)["status"] == 200
    assert send(app, uploading.mnemonic, 0, pieces(DATA)[0], owner)["status"] == 200  # sent again
    assert app.taken == [0, 1, 2, 0]
    client = api("owner")
    finished = client.post(f"/api/v1/datasets/{uploading.mnemonic}/finish/", {}, format="json")
    assert finished.status_code == 200, finished.content
    key = unwrap(client, uploading.mnemonic, private_keys["owner"])
    content = client.get(f"/api/v1/datasets/{uploading.mnemonic}/content/", headers=key_header(key))
    assert b"".join(content.streaming_content) == DATA
    # The dataset is available now: a chunk sent late changes nothing, whoever's cache is warm.
    late = send(app, uploading.mnemonic, 1, pieces(DATA)[0], owner, extra=())
    assert late["status"] == 409
    content = client.get(f"/api/v1/datasets/{uploading.mnemonic}/content/", headers=key_header(key))
    assert b"".join(content.streaming_content) == DATA


def test_the_write_grant_is_checked_with_every_chunk(app, uploading, keyed):
    writer = token_of(keyed["writer"])
    assert send(app, uploading.mnemonic, 0, pieces(DATA)[0], writer)["status"] == 200
    Grant.objects.filter(dataset=uploading, user=keyed["writer"]).delete()
    # The token and the upload's details are still cached; the grant is not.
    refused = send(app, uploading.mnemonic, 1, pieces(DATA)[1], writer)
    assert refused["status"] == 404  # as the view answers someone without a grant
    assert not Chunk.objects.filter(dataset=uploading, index=1).exists()


def test_a_supplied_key_and_other_requests_go_to_the_view(app, uploading, keyed, api, private_keys):
    owner = token_of(keyed["owner"])
    key = unwrap(api("owner"), uploading.mnemonic, private_keys["owner"])
    header = next(iter(key_header(key).items()))
    assert send(app, uploading.mnemonic, 0, pieces(DATA)[0], owner, extra=[header])["status"] == 200
    assert app.taken == []  # the view took it (and sealed the key again)
    Dataset.objects.filter(pk=uploading.pk).update(state=DatasetState.DELETED)
    gone = send(app, uploading.mnemonic, 1, pieces(DATA)[1], owner)
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
def test_browser_sessions_with_their_csrf_token(app, uploading, keyed, role, csrf, status, taken):
    """The upload page's requests (session cookie and CSRF token) take the same path; without the
    token Django's CSRF check refuses them, as the view would."""
    response = send(app, uploading.mnemonic, 0, pieces(DATA)[0], extra=session_headers(keyed[role], csrf))
    assert response["status"] == status, response["body"][:200]
    if not csrf:
        assert b"CSRF" in response["body"]
    assert app.taken == ([0] if taken else [])


def test_a_dataset_removed_while_its_details_are_cached_is_a_clear_404(app, uploading, keyed):
    owner = token_of(keyed["owner"])
    assert send(app, uploading.mnemonic, 0, pieces(DATA)[0], owner)["status"] == 200
    Dataset.objects.filter(pk=uploading.pk).delete()  # e.g. by an administrator
    gone = send(app, uploading.mnemonic, 1, pieces(DATA)[1], owner)
    assert status_and_code(gone) == (404, "not_found")
