"""Admin site: keys are activated and revoked through the services (audited, wraps removed)."""

from __future__ import annotations

import pytest

from portal.models import AuditEvent
from storage.models import KeyState, KeyWrap, UserKey
from storage.tests.helpers import upload

pytestmark = pytest.mark.django_db


def test_admin_actions_activate_and_revoke_keys(keyed, api, web, people):
    key = UserKey.objects.get(user=people["reader"])
    key.state = KeyState.PENDING
    key.save()
    people["admin"].is_superuser = True
    people["admin"].save()
    admin = web("admin")
    changelist = "/admin/storage/userkey/"
    assert admin.get(changelist).status_code == 200
    response = admin.post(changelist, {"action": "activate", "_selected_action": [key.pk]}, follow=True)
    assert response.status_code == 200 and "1 key(s) activated." in response.content.decode()
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE and AuditEvent.objects.filter(action="storage.key_activated").exists()
    upload(api("owner"), b"x" * 100)
    owners = UserKey.objects.get(user=people["owner"])
    assert KeyWrap.objects.filter(user_key=owners).exists()
    admin.post(changelist, {"action": "revoke", "_selected_action": [owners.pk]})
    owners.refresh_from_db()
    assert owners.state == KeyState.REVOKED and not KeyWrap.objects.filter(user_key=owners).exists()
    # Datasets are shown but cannot be changed here; the sealed key is never displayed.
    assert web("reader").get(changelist).status_code == 302
