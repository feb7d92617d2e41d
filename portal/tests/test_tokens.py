"""Personal API tokens: created on the profile page or API, shown once, scopes enforced centrally."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from oauth2_provider.models import AccessToken

from portal.models import ApiToken, AuditEvent
from portal.services.tokens import create_api_token

pytestmark = pytest.mark.django_db


def token_for(user, scopes, days=1) -> str:
    _, secret = create_api_token(user, name="t", scopes=scopes,
                                 expires_at=timezone.now() + dt.timedelta(days=days))
    return secret


def test_profile_page_creates_a_token_shown_once(client, owner):
    client.force_login(owner)
    expires = (timezone.localdate() + dt.timedelta(days=30)).isoformat()
    response = client.post("/profile/", {"name": "laptop", "scopes": ["read", "upload"],
                                         "expires_on": expires})
    assert response.status_code == 200
    secret = response.context["new_secret"]
    assert secret.startswith("rdp_") and secret in response.content.decode()
    token = ApiToken.objects.get(user=owner)
    assert token.scope_list == ["read", "upload"] and token.hint == secret[-4:]
    # The usable token is not stored (only its checksum), and never shown again.
    assert AccessToken.objects.get(pk=token.access_token_id).token == ""
    assert secret not in client.get("/profile/").content.decode()
    assert AuditEvent.objects.filter(action="token.created", actor=owner).exists()


def test_profile_page_rejects_admin_scope_for_non_staff(client, owner):
    client.force_login(owner)
    expires = (timezone.localdate() + dt.timedelta(days=3)).isoformat()
    response = client.post("/profile/", {"name": "x", "scopes": ["admin"], "expires_on": expires})
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_bearer_token_works_and_read_token_cannot_write(client, owner):
    secret = token_for(owner, ["read"])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    me = client.get("/api/v1/me/", **auth)
    assert me.status_code == 200 and me.json()["username"] == "owner"
    response = client.patch("/api/v1/me/", {"first_name": "X"}, content_type="application/json", **auth)
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert "write" in response.json()["detail"]
    assert ApiToken.objects.get().last_used_at is not None


def test_write_token_can_write(client, owner):
    secret = token_for(owner, ["read", "write"])
    response = client.patch("/api/v1/me/", {"first_name": "Ada"}, content_type="application/json",
                            HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 200
    owner.refresh_from_db()
    assert owner.first_name == "Ada"


def test_staff_only_endpoints_need_the_admin_scope(client, admin_user):
    without = token_for(admin_user, ["read", "write"])
    with_admin = token_for(admin_user, ["read", "admin"])
    assert client.get("/api/v1/audit-events/", HTTP_AUTHORIZATION=f"Bearer {without}").status_code == 403
    assert client.get("/api/v1/audit-events/", HTTP_AUTHORIZATION=f"Bearer {with_admin}").status_code == 200


def test_revoked_and_expired_tokens_stop_working(client, owner):
    secret = token_for(owner, ["read", "write"])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    token_id = ApiToken.objects.get().pk
    assert client.delete(f"/api/v1/tokens/{token_id}/", **auth).status_code == 204
    assert client.get("/api/v1/me/", **auth).status_code == 401
    assert AuditEvent.objects.filter(action="token.revoked", object_id=str(token_id)).exists()
    expired = token_for(owner, ["read"])
    AccessToken.objects.filter(scope="read").update(expires=timezone.now() - dt.timedelta(seconds=1))
    assert client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {expired}").status_code == 401


def test_api_creates_tokens_but_never_more_rights_than_the_creating_token(client, owner):
    secret = token_for(owner, ["read", "write"])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    created = client.post("/api/v1/tokens/", {"name": "ci", "scopes": ["read"]},
                          content_type="application/json", **auth)
    assert created.status_code == 201
    assert created.json()["token"].startswith("rdp_")
    listed = client.get("/api/v1/tokens/", **auth).json()["results"]
    assert all("token" not in row for row in listed)
    escalate = client.post("/api/v1/tokens/", {"name": "more", "scopes": ["upload"]},
                           content_type="application/json", **auth)
    assert escalate.status_code == 400
    assert "scopes it has itself" in escalate.json()["detail"]


def test_users_see_and_revoke_only_their_own_tokens(client, owner, stranger):
    token_for(owner, ["read"])
    token_id = ApiToken.objects.get().pk
    client.force_login(stranger)
    assert client.get("/api/v1/tokens/").json()["count"] == 0
    assert client.delete(f"/api/v1/tokens/{token_id}/").status_code == 404
    assert client.post(f"/profile/tokens/{token_id}/revoke/").status_code == 404
    assert ApiToken.objects.get().revoked_at is None


def test_token_expiry_is_bounded(client, owner, settings):
    client.force_login(owner)
    too_far = (timezone.now() + dt.timedelta(days=settings.PORTAL_TOKEN_MAX_DAYS + 2)).isoformat()
    response = client.post("/api/v1/tokens/", {"name": "x", "scopes": ["read"], "expires_at": too_far},
                           content_type="application/json")
    assert response.status_code == 400
    past = (timezone.now() - dt.timedelta(days=1)).isoformat()
    response = client.post("/api/v1/tokens/", {"name": "x", "scopes": ["read"], "expires_at": past},
                           content_type="application/json")
    assert response.status_code == 400 and "expires_at" in response.json()["errors"]
