"""`/api/v1/links/<type>/`: what link cells name, for the user asking; unknown and hidden look alike."""

from __future__ import annotations

import pytest

from portal.services.links import LinkTarget, register_link_type, unregister_link_type


@pytest.fixture
def slides(owner):
    """A stand-in owner app for the `slide` link type: slide 1 is visible to `owner` only."""

    def resolve(user, ids):
        visible = {1} if user == owner else set()
        return {i: LinkTarget(id=i, label=f"Slide {i}", url=f"/slides/{i}/", state="ready",
                              object="pathology.slide") for i in ids if i in visible}

    register_link_type("slide", resolve)
    yield
    unregister_link_type("slide")


def test_links_resolve_for_the_user_asking(client, owner, stranger, slides):
    client.force_login(owner)
    body = client.get("/api/v1/links/slide/?ids=1,2").json()
    assert body == {"type": "slide", "results": [
        {"id": 1, "label": "Slide 1", "url": "/slides/1/", "state": "ready", "object": "pathology.slide",
         "found": True},
        {"id": 2, "found": False},
    ]}
    client.force_login(stranger)
    assert client.get("/api/v1/links/slide/?ids=1").json()["results"] == [{"id": 1, "found": False}]


def test_link_types_without_their_app_report_not_found(client, owner):
    client.force_login(owner)
    assert client.get("/api/v1/links/study/?ids=5").json()["results"] == [{"id": 5, "found": False}]


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/api/v1/links/slide/", 400),
        ("/api/v1/links/slide/?ids=a,b", 400),
        ("/api/v1/links/slide/?ids=-1", 400),
        ("/api/v1/links/slide/?ids=99999999999999999999999", 400),
        ("/api/v1/links/slide/?ids=" + ",".join(["1"] * 1001), 400),
        ("/api/v1/links/patient/?ids=1", 404),
    ],
)
def test_bad_link_requests_are_4xx(client, owner, url, status):
    client.force_login(owner)
    response = client.get(url)
    assert response.status_code == status
    assert response.json()


def test_links_need_a_signed_in_user(client):
    assert client.get("/api/v1/links/slide/?ids=1").status_code in (401, 403)


def test_digits_of_other_scripts_are_400_not_500(client, owner):
    client.force_login(owner)
    for ids in ("²", "٣", "1,²"):
        assert client.get(f"/api/v1/links/slide/?ids={ids}").status_code == 400
