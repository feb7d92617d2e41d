"""Lists cost a fixed number of queries, however many rows they show."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from portal.models import Job, StoredFile
from portal.services.audit import record_audit_event
from portal.services.tokens import create_api_token

pytestmark = pytest.mark.django_db


def queries(call) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = call()
    assert response.status_code == 200
    return len(captured.captured_queries)


def add_rows(user, count: int) -> None:
    stored_type = ContentType.objects.get_for_model(StoredFile)
    for index in range(count):
        stored = StoredFile.objects.create(path=f"f{user.pk}-{Job.objects.count()}-{index}.bin", size=1,
                                           sha256="0" * 64)
        Job.objects.create(kind="portal.scrub", created_by=user, target_type=stored_type, target_id=stored.pk)
        record_audit_event("test.event", actor=user, obj=stored)
        create_api_token(user, name=f"t{index}-{Job.objects.count()}", scopes=["read"],
                         expires_at=timezone.now() + dt.timedelta(days=1))


@pytest.mark.parametrize("url", ["/api/v1/jobs/", "/api/v1/audit-events/", "/api/v1/tokens/", "/jobs/",
                                 "/profile/"])
def test_list_queries_do_not_grow_with_rows(url, admin_user, client):
    client.force_login(admin_user)
    add_rows(admin_user, 2)
    few = queries(lambda: client.get(url))
    add_rows(admin_user, 20)
    assert queries(lambda: client.get(url)) == few
