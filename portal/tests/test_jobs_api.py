"""Jobs API and pages: who sees, starts, cancels and retries what (no worker needed here)."""

from __future__ import annotations

import pytest

from portal.models import Job, JobState
from portal.services.jobs import start_job

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "stranger", "owner", "admin"]


@pytest.fixture
def users(owner, stranger, admin_user):
    return {"anonymous": None, "stranger": stranger, "owner": owner, "admin": admin_user}


@pytest.fixture
def owned_job(owner):
    return Job.objects.create(kind="portal.scrub", created_by=owner, state=JobState.FAILED,
                              error="disk on fire", traceback="Traceback: secret internals")


@pytest.mark.parametrize("role,status", [("anonymous", 401), ("stranger", 404), ("owner", 200),
                                         ("admin", 200)])
def test_job_detail_by_role(role, status, users, owned_job, client_for):
    response = client_for(users[role]).get(f"/api/v1/jobs/{owned_job.pk}/")
    assert response.status_code == status
    if status == 200:
        body = response.json()
        assert body["error"] == "disk on fire"
        # Tracebacks are for staff only.
        assert body["traceback"] == ("Traceback: secret internals" if role == "admin" else None)


@pytest.mark.parametrize("role,count", [("stranger", 0), ("owner", 1), ("admin", 1)])
def test_job_list_is_filtered_per_user(role, count, users, owned_job, client_for):
    assert client_for(users[role]).get("/api/v1/jobs/").json()["count"] == count


def test_job_list_anonymous_is_refused(client_for, owned_job):
    response = client_for(None).get("/api/v1/jobs/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


@pytest.mark.parametrize("role,status", [("anonymous", 401), ("stranger", 404), ("owner", 409),
                                         ("admin", 409)])
def test_cancel_by_role(role, status, users, owned_job, client_for):
    # The job already failed: those who may act on it get a 409 explaining why not.
    assert client_for(users[role]).post(f"/api/v1/jobs/{owned_job.pk}/cancel/").status_code == status


def test_cancel_of_a_queued_job_is_immediate(owner, client_for, django_capture_on_commit_callbacks):
    job = start_job("portal.scrub", user=owner)
    response = client_for(owner).post(f"/api/v1/jobs/{job.pk}/cancel/")
    assert response.status_code == 202
    assert response.json()["state"] == "cancelled"


@pytest.mark.parametrize("role,status", [("stranger", 404), ("owner", 403), ("admin", 202)])
def test_retry_needs_the_right_to_start_that_kind(role, status, users, owned_job, client_for):
    # Scrubs are staff-only, so even the (non-staff) starter of this old job may not restart it.
    assert client_for(users[role]).post(f"/api/v1/jobs/{owned_job.pk}/retry/").status_code == status


@pytest.mark.parametrize("role,status", [("anonymous", 401), ("stranger", 400), ("admin", 202)])
def test_starting_staff_only_kinds(role, status, users, client_for):
    response = client_for(users[role]).post("/api/v1/jobs/", {"kind": "portal.scrub"}, format="json")
    assert response.status_code == status
    if status == 400:
        assert "Unknown job kind" in response.json()["errors"]["kind"][0]


def test_job_kinds_lists_what_the_user_may_start(client_for, stranger, admin_user):
    assert client_for(stranger).get("/api/v1/job-kinds/").json() == []
    kinds = client_for(admin_user).get("/api/v1/job-kinds/").json()
    assert [k["name"] for k in kinds] == ["portal.scrub"]


def test_job_params_are_validated(client_for, admin_user):
    api = client_for(admin_user)
    bad_type = api.post("/api/v1/jobs/", {"kind": "portal.scrub", "params": {"rate_limit_mb_s": "fast"}},
                        format="json")
    assert bad_type.status_code == 400
    assert "params.rate_limit_mb_s" in bad_type.json()["errors"]
    unknown = api.post("/api/v1/jobs/", {"kind": "portal.scrub", "params": {"speed": 1}}, format="json")
    assert unknown.status_code == 400 and "params.speed" in unknown.json()["errors"]
    assert not Job.objects.exists()


@pytest.mark.parametrize("role,status", [("anonymous", 302), ("stranger", 404), ("owner", 200),
                                         ("admin", 200)])
def test_job_page_by_role(role, status, users, owned_job, client):
    if users[role] is not None:
        client.force_login(users[role])
    response = client.get(f"/jobs/{owned_job.pk}/")
    assert response.status_code == status
    if status == 200:
        html = response.content.decode()
        assert "disk on fire" in html
        assert ("secret internals" in html) is (role == "admin")


def test_jobs_page_lists_only_visible_jobs(client, owner, stranger, owned_job):
    client.force_login(stranger)
    assert f'data-job-id="{owned_job.pk}"' not in client.get("/jobs/").content.decode()
    client.force_login(owner)
    assert f'data-job-id="{owned_job.pk}"' in client.get("/jobs/").content.decode()


def test_jobs_page_start_button_only_for_allowed_kinds(client, owner, admin_user):
    client.force_login(owner)
    assert "data-start-kind" not in client.get("/jobs/").content.decode()
    assert client.post("/jobs/start/", {"kind": "portal.scrub"}).status_code == 403
    client.force_login(admin_user)
    assert 'data-start-kind="portal.scrub"' in client.get("/jobs/").content.decode()
    assert client.post("/jobs/start/", {"kind": "portal.scrub"}).status_code == 302
    assert Job.objects.filter(created_by=admin_user).count() == 1


def test_page_cancel_ignores_foreign_next_urls(client, admin_user):
    job = Job.objects.create(kind="portal.scrub", created_by=admin_user)
    client.force_login(admin_user)
    response = client.post(f"/jobs/{job.pk}/cancel/", {"next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == "/jobs/"
