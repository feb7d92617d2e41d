"""The audit log: what is recorded, that it is append-only, and who may read it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.db.utils import DatabaseError

from portal.models import AuditEvent
from portal.services.audit import record_audit_event

pytestmark = pytest.mark.django_db


def actions() -> list[str]:
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


def test_sign_in_and_failed_sign_in_are_audited(client, owner):
    assert client.post("/accounts/login/", {"username": "owner", "password": "wrong"}).status_code == 200
    failed = AuditEvent.objects.get(action="auth.login_failed")
    assert failed.details["username"] == "owner" and failed.ip_address == "127.0.0.1"
    response = client.post("/accounts/login/", {"username": "owner", "password": "pw-for-tests-1"})
    assert response.status_code == 302
    login = AuditEvent.objects.get(action="auth.login")
    assert login.actor == owner and login.details["method"] == "password"
    client.post("/accounts/logout/")
    assert actions()[-1] == "auth.logout"


def test_privilege_and_group_changes_are_audited(owner):
    owner.is_staff = True
    owner.save()
    event = AuditEvent.objects.get(action="permission.changed")
    assert event.details["changes"] == {"is_staff": [False, True]}
    owner.groups.add(Group.objects.create(name="pathologists"))
    assert AuditEvent.objects.filter(action="permission.changed").count() == 2


def test_admin_site_actions_are_audited(client, admin_user, owner):
    admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    response = client.post(f"/admin/portal/user/{owner.pk}/change/", {
        "username": "owner", "email": "owner@example.org", "is_active": "on",
        "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00", "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00", "first_name": "Olive", "last_name": "", "oidc_subject": "",
    })
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.filter(action="admin.change").get()
    assert event.actor == admin_user and event.object_id == str(owner.pk)


def test_audit_rows_cannot_be_changed_even_with_raw_sql(owner):
    event = record_audit_event("test.event", actor=owner)
    for statement in ("UPDATE portal_auditevent SET action = 'forged' WHERE id = %s",
                      "DELETE FROM portal_auditevent WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(statement, [event.pk])
    with pytest.raises(ValueError):
        event.save()
    with pytest.raises(ValueError):
        event.delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "test.event"


@pytest.mark.parametrize("role,status", [("anonymous", 401), ("stranger", 403), ("owner", 403),
                                         ("admin", 200)])
def test_audit_api_is_for_admins(role, status, client_for, owner, stranger, admin_user):
    users = {"anonymous": None, "stranger": stranger, "owner": owner, "admin": admin_user}
    record_audit_event("test.event", actor=owner)
    response = client_for(users[role]).get("/api/v1/audit-events/?action=test.event")
    assert response.status_code == status
    if status == 200:
        assert response.json()["count"] == 1


def test_audit_api_is_read_only_and_filters(client_for, admin_user, owner):
    record_audit_event("token.created", actor=owner)
    record_audit_event("auth.login", actor=owner)
    api = client_for(admin_user)
    assert api.get("/api/v1/audit-events/?action_prefix=auth.").json()["count"] == 1
    event_id = AuditEvent.objects.first().pk
    assert api.delete(f"/api/v1/audit-events/{event_id}/").status_code == 405
    assert api.post("/api/v1/audit-events/", {}, format="json").status_code == 405


def test_admin_audit_page_has_filters_and_is_read_only(client, admin_user):
    admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    page = client.get("/admin/portal/auditevent/?action=permission.changed")
    assert page.status_code == 200
    assert client.get("/admin/portal/auditevent/add/").status_code == 403
