"""Pages, admin registrations, API root and documentation."""

from __future__ import annotations

import re

import pytest
from django.apps import apps
from django.contrib import admin

pytestmark = pytest.mark.django_db

OUR_APPS = ("portal", "metadata", "storage", "pathology", "imaging")


def test_every_model_is_in_the_admin_with_search_and_filters():
    for model in apps.get_models():
        if model._meta.app_label not in OUR_APPS:
            continue
        assert admin.site.is_registered(model), f"{model.__name__} is not in the admin"
        model_admin = admin.site._registry[model]
        assert model_admin.search_fields, f"{model.__name__} admin has no search"
        assert model_admin.list_filter, f"{model.__name__} admin has no filters"


@pytest.mark.parametrize("url", ["/", "/profile/", "/jobs/"])
def test_pages_send_anonymous_users_to_sign_in(client, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("url", ["/", "/profile/", "/jobs/", "/api/v1/", "/api/docs/"])
def test_pages_render_for_a_signed_in_user(client, owner, url):
    client.force_login(owner)
    response = client.get(url, HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    html = response.content.decode()
    # No third-party hosts: every script and stylesheet is served by the portal itself.
    for ref in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert not ref.startswith(("http://", "https://", "//")) or "testserver" in ref, ref


def test_api_docs_load_swagger_from_local_static(client, owner):
    client.force_login(owner)
    html = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html


def test_openapi_schema_describes_bearer_tokens(client, owner):
    client.force_login(owner)
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["components"]["securitySchemes"]["bearerToken"]["scheme"] == "bearer"
    assert "/api/v1/jobs/{id}/cancel/" in schema["paths"]


def test_static_files_are_served(client):
    response = client.get("/static/portal/portal.css")
    assert response.status_code == 200


def test_login_page_is_labelled_for_assistive_technology(client):
    html = client.get("/accounts/login/").content.decode()
    assert '<label for="id_username">' in html and 'id="id_username"' in html
    assert '<label for="id_password">' in html
    assert 'lang="en"' in html and "Skip to content" in html


def test_failed_sign_in_says_so(client, owner):
    response = client.post("/accounts/login/", {"username": "owner", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_api_root_lists_the_endpoints(client, owner):
    client.force_login(owner)
    body = client.get("/api/v1/", HTTP_ACCEPT="application/json").json()
    assert {"me", "jobs", "job-kinds", "tokens", "audit-events", "schema", "docs"} <= set(body)
