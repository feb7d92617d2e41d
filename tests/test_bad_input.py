"""Bad input gets a clear 4xx in the portal's error format on every API endpoint, never a 500.

The endpoints are taken from the OpenAPI schema, so endpoints added later are covered too.
"""

from __future__ import annotations

import json
import re

import pytest
from drf_spectacular.generators import SchemaGenerator

from portal.models import Job, JobState, User

pytestmark = pytest.mark.django_db

BODY_METHODS = {"post", "put", "patch"}


def operations():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, item in schema["paths"].items():
        for method in item:
            yield path, method


def raw_body_operations() -> set[tuple[str, str]]:
    """Operations whose body is raw bytes (chunk uploads), not JSON: they have limits of their own."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {
        (path, method)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if set(operation.get("requestBody", {}).get("content", {})) == {"application/octet-stream"}
    }


@pytest.fixture
def admin_client(client):
    admin = User.objects.create_user("root", password="pw-for-tests-1", is_staff=True,
                                     is_superuser=True)
    Job.objects.create(kind="portal.scrub", created_by=admin, state=JobState.FAILED)
    client.force_login(admin)
    return client


def concrete(path: str) -> str:
    job = Job.objects.first()
    path = path.replace("{mnemonic}", "calm_brave_otter")  # datasets are addressed by mnemonic
    return re.sub(r"\{[^}]+\}", str(job.pk), path)


def assert_clear_4xx(response, context: str) -> None:
    assert 400 <= response.status_code < 500, f"{context}: {response.status_code} {response.content[:300]}"
    if response.status_code != 405 and response.get("Content-Type", "").startswith("application/json"):
        body = response.json()
        assert body.get("detail"), f"{context}: no message in {body}"
        assert body.get("code"), f"{context}: no code in {body}"


@pytest.mark.parametrize("path,method", [(p, m) for p, m in operations() if m in BODY_METHODS])
def test_malformed_and_wrong_bodies(admin_client, path, method):
    url = concrete(path)
    send = getattr(admin_client, method)
    cases = {
        "malformed JSON": '{"name": ',
        "JSON array": "[1, 2, 3]",
        "wrong types": json.dumps({"name": ["x"], "kind": 5, "scopes": "read", "params": [1],
                                   "first_name": {"a": 1}, "expires_at": "tomorrow"}),
        "unknown field": json.dumps({"surely_not_a_field": 1}),
    }
    for label, body in cases.items():
        response = send(url, body, content_type="application/json")
        assert_clear_4xx(response, f"{method.upper()} {url} with {label}")


@pytest.mark.parametrize("path,method", [(p, m) for p, m in operations() if m in BODY_METHODS])
def test_oversized_bodies_get_413(admin_client, path, method, settings):
    body = json.dumps({"name": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)})
    response = getattr(admin_client, method)(concrete(path), body, content_type="application/json")
    if (path, method) in raw_body_operations():  # JSON is the wrong kind of body there at any size
        assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"
        return
    assert response.status_code == 413, f"{method} {path}: {response.status_code}"
    assert response.json()["code"] == "payload_too_large"


@pytest.mark.parametrize("path", sorted({p for p, m in operations() if m == "get"}))
def test_junk_query_parameters(admin_client, path):
    url = concrete(path) + "?page=abc&page_size=-5&ordering=nonsense&state=bogus&created_after=noon&since=x"
    response = admin_client.get(url)
    assert response.status_code < 500, f"GET {url}: {response.status_code}"
    if response.status_code >= 400:
        assert_clear_4xx(response, f"GET {url}")


def test_validation_errors_name_each_field(admin_client):
    response = admin_client.post("/api/v1/tokens/", {"name": "", "scopes": ["root"]},
                                 content_type="application/json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["errors"] == {"name": ["This field may not be blank."],
                              "scopes.0": ['"root" is not a valid choice.']}


def test_unknown_api_url_is_a_json_404(admin_client):
    response = admin_client.get("/api/v1/jobs/999999/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


# UTC offsets that ISO 8601 allows and PostgreSQL does not take (it stops at 15:59), and moments
# at the edges of the years 1 to 9999 (in UTC or not).
FAR_OFFSETS = {
    "since": "0701-12-20T07:30:48-23:35",
    "until": "9975-05-19T15:32:46-21:04",
    "at": "0054-11-06T22:37:04.196+18:23",
    "created_after": "2026-01-01T00:00:00+23:59",
    "created_before": "9999-12-31T23:00:00-23:59",
}


@pytest.mark.parametrize("path", sorted({p for p, m in operations() if m == "get"}))
def test_moments_with_any_utc_offset(admin_client, path):
    url = concrete(path)
    response = admin_client.get(url, FAR_OFFSETS)
    assert response.status_code < 500, f"GET {url}: {response.status_code}"
    if response.status_code >= 400:
        assert_clear_4xx(response, f"GET {url}")


@pytest.mark.parametrize("path", sorted({p for p, m in operations() if m == "get"}))
def test_nul_characters_in_query_parameters(admin_client, path):
    url = concrete(path) + "?q=a%00b&search=a%00b&purpose=x%00&state=%00&name=%00"
    response = admin_client.get(url)
    assert response.status_code == 400, f"GET {url}: {response.status_code}"
    assert "NUL" in response.json()["detail"]


def text_fields() -> dict[tuple[str, str], list[str]]:
    """The text fields of each operation's JSON body (names and slugs of related objects too)."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    components = schema.get("components", {}).get("schemas", {})
    found = {}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body.get("schema", {}).get("$ref", "")
            properties = components.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})
            names = [name for name, spec in properties.items()
                     if spec.get("type") == "string" and not spec.get("readOnly")]
            if names:
                found[(path, method)] = names
    return found


@pytest.mark.parametrize("path,method,field", [(p, m, f) for (p, m), fs in text_fields().items() for f in fs])
def test_nul_characters_in_bodies(admin_client, path, method, field):
    url = concrete(path)
    body = json.dumps({field: "a\u0000b"})
    response = getattr(admin_client, method)(url, body, content_type="application/json")
    assert response.status_code < 500, f"{method.upper()} {url}: {response.status_code}"
    if response.status_code >= 400:
        assert_clear_4xx(response, f"{method.upper()} {url} with a NUL character in {field}")


def test_moments_compare_in_utc_whatever_their_offset(admin_client):
    import datetime as dt

    from metadata.services.projects import create_project
    from portal.models import AuditEvent
    from portal.services.audit import record_audit_event

    admin = User.objects.get(username="root")
    record_audit_event("test.moment", actor=admin)
    moment = AuditEvent.objects.get(action="test.moment").timestamp
    # the same instant written 23:35 behind UTC, a microsecond before and after it
    behind = dt.timezone(-dt.timedelta(hours=23, minutes=35))
    before = (moment - dt.timedelta(microseconds=1)).astimezone(behind).isoformat()
    after = (moment + dt.timedelta(microseconds=1)).astimezone(behind).isoformat()
    window = {"action": "test.moment", "since": before, "until": after}
    found = admin_client.get("/api/v1/audit-events/", window)
    assert found.status_code == 200 and [e["action"] for e in found.json()["results"]] == ["test.moment"]
    later = admin_client.get("/api/v1/audit-events/", {"action": "test.moment", "since": after})
    assert later.status_code == 200 and later.json()["results"] == []
    # before the year 1 once in UTC: a clear 400 naming the parameter
    too_early = admin_client.get("/api/v1/audit-events/", {"since": "0001-01-01T00:00:00+05:00"})
    assert too_early.status_code == 400 and "since" in too_early.json()["errors"]
    # the sheet's time travel takes such offsets too
    project = create_project(name="Offsets", owner=admin)
    base = f"/api/v1/projects/{project.pk}/matrix"
    for url, params in ((f"{base}/", {"at": FAR_OFFSETS["at"]}),
                        (f"{base}/", {"at": FAR_OFFSETS["until"], "format": "csv"}),
                        (f"{base}/difference/", {"since": FAR_OFFSETS["since"], "until": FAR_OFFSETS["at"]})):
        response = admin_client.get(url, params)
        assert response.status_code == 200, (url, params, response.status_code, response.content[:300])


def test_a_page_with_a_nul_character_gets_400(admin_client):
    response = admin_client.get("/datasets/?q=a%00b")
    assert response.status_code == 400 and b"NUL" in response.content
