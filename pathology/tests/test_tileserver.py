"""The tile path in front of Django: the same answers as the API views, no query per tile once
warm, and access that follows tokens, sessions and membership within the cache time."""

from __future__ import annotations

import datetime as dt

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from metadata.models import Membership
from pathology import tileserver
from pathology.models import Slide
from pathology.pyramid import SlidePyramid
from pathology.tests.conftest import BIG, TILE, run_conversion
from pathology.tests.test_api import add
from portal.services.tokens import create_api_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def app():
    from portal.asgi import application

    tileserver.clear_caches()
    yield application
    tileserver.clear_caches()


@pytest.fixture
def ready(api, project, slide_files, small_tiles):
    slide = Slide.objects.get(pk=add(api, "writer", project, slide_files["generic"]).json()["id"])
    run_conversion(slide)
    return slide


def get(app, path, headers=(), method="GET"):
    communicator = HttpCommunicator(app, method, path, headers=[(k.encode(), v.encode()) for k, v in headers])
    return async_to_sync(communicator.get_response)()


def session_of(user) -> tuple[str, str]:
    client = Client()
    client.force_login(user)
    return ("cookie", f"sessionid={client.cookies['sessionid'].value}")


def token_of(user, scopes=("read",)) -> tuple[str, str]:
    _, secret = create_api_token(
        user, name="tiles", scopes=list(scopes), expires_at=timezone.now() + dt.timedelta(hours=1)
    )
    return ("authorization", f"Bearer {secret}")


def header(response, name: str) -> str:
    return dict(response["headers"]).get(name.encode(), b"").decode()


def test_tiles_by_session_and_token_with_caching_headers(app, ready, people):
    x, y = int(BIG.cx // TILE), int(BIG.cy // TILE)
    stored = SlidePyramid(ready.pyramid.full_path).tile(4, x, y)
    for credentials in (session_of(people["reader"]), token_of(people["reader"])):
        response = get(app, f"/api/v1/slides/{ready.pk}/tiles/4/{x}/{y}", [credentials])
        assert response["status"] == 200 and response["body"] == stored
        assert header(response, "content-type") == "image/jpeg" and "private" in header(
            response, "cache-control"
        )
        etag = header(response, "etag")
        again = get(app, f"/api/v1/slides/{ready.pk}/tiles/4/{x}/{y}", [credentials, ("if-none-match", etag)])
        assert again["status"] == 304 and again["body"] == b""
        deep = get(app, f"/api/v1/slides/{ready.pk}/deepzoom_files/12/{x}_{y}.jpeg", [credentials])
        assert deep["status"] == 200 and deep["body"] == stored
        head = get(app, f"/api/v1/slides/{ready.pk}/tiles/4/{x}/{y}", [credentials], method="HEAD")
        assert (
            head["status"] == 200
            and head["body"] == b""
            and header(head, "content-length") == str(len(stored))
        )
    # edge and low Deep Zoom tiles are made as the API view makes them
    reader = Client()
    reader.force_login(people["reader"])
    for path in ("deepzoom_files/12/11_8.jpeg", "deepzoom_files/3/0_0.jpeg", "tiles/4/0/8"):
        fast = get(app, f"/api/v1/slides/{ready.pk}/{path}", [session_of(people["reader"])])
        slow = reader.get(f"/api/v1/slides/{ready.pk}/{path}")
        assert fast["status"] == slow.status_code == 200 and fast["body"] == slow.content, path


def test_refusals(app, ready, people, project):
    path = f"/api/v1/slides/{ready.pk}/tiles/0/0/0"
    anonymous = get(app, path)
    assert anonymous["status"] == 401 and "Bearer" in header(anonymous, "www-authenticate")
    assert get(app, path, [("authorization", "Bearer rdp_nonsense")])["status"] == 401
    assert get(app, path, [("cookie", "sessionid=nonsense")])["status"] == 401
    write_only = token_of(people["reader"], scopes=("write",))
    assert get(app, path, [write_only])["status"] == 401
    stranger = get(app, path, [session_of(people["stranger"])])
    assert stranger["status"] == 404 and b"No such slide" in stranger["body"]
    reader = session_of(people["reader"])
    assert get(app, f"/api/v1/slides/{ready.pk}/tiles/4/99/0", [reader])["status"] == 404
    assert get(app, f"/api/v1/slides/{ready.pk}/tiles/9/0/0", [reader])["status"] == 404
    assert get(app, f"/api/v1/slides/{ready.pk}/deepzoom_files/12/0_0.gif", [reader])["status"] == 404
    assert get(app, f"/api/v1/slides/{ready.pk}/deepzoom_files/13/0_0.jpeg", [reader])["status"] == 404
    pending = Slide.objects.create(project=project, name="pending", file_name="p.svs")
    response = get(app, f"/api/v1/slides/{pending.pk}/tiles/0/0/0", [reader])
    assert response["status"] == 409 and b"not_ready" in response["body"]
    assert get(app, f"/api/v1/slides/{ready.pk}/tiles/0/0/0", [reader], method="POST")["status"] != 200
    assert get(app, "/healthz")["status"] == 200  # everything else goes to Django


def test_no_query_per_tile_once_warm_and_access_follows_within_the_cache_time(
    app, ready, people, settings, monkeypatch
):
    calls = {"principal": 0, "access": 0}
    load_principal, load_access = tileserver.load_principal, tileserver.load_access

    def counting(name, real):
        def wrapper(*args):
            calls[name] += 1
            return real(*args)

        return wrapper

    monkeypatch.setattr(tileserver, "load_principal", counting("principal", load_principal))
    monkeypatch.setattr(tileserver, "load_access", counting("access", load_access))
    reader = token_of(people["reader"])
    for x in range(4):
        assert get(app, f"/api/v1/slides/{ready.pk}/tiles/2/{x % 3}/0", [reader])["status"] == 200
    assert calls == {"principal": 1, "access": 1}  # the first tile only
    with CaptureQueriesContext(connection) as queries:
        load_access(people["reader"], ready.pk)
    assert len(queries) == 1

    # The reader leaves the project: tiles stop once the cache time is over.
    Membership.objects.filter(user=people["reader"], project=ready.project).delete()
    settings.PATHOLOGY_TILE_CACHE_SECONDS = 0
    assert get(app, f"/api/v1/slides/{ready.pk}/tiles/2/0/0", [reader])["status"] == 404
    assert calls == {"principal": 2, "access": 2}
