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
