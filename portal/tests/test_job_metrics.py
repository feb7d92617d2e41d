"""Series a job reports (loss and accuracy per epoch): recorded at once, pushed, shown by the API
and on the job page."""

from __future__ import annotations

import json
import re

import pytest

from portal.models import Job, JobState
from portal.services import jobs as job_service
from portal.services.jobs import MAX_METRIC_POINTS, JobProgress, job_payload

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(monkeypatch):
    """Messages the jobs service published, instead of sending them to Redis."""
    sent = []
    monkeypatch.setattr(job_service, "publish", lambda groups, message: sent.append((groups, message)))
    return sent


@pytest.fixture
def running(owner):
    return Job.objects.create(kind="portal.scrub", created_by=owner, state=JobState.RUNNING)


def test_a_point_is_saved_and_published_at_once(running, published):
    progress = JobProgress(running)
    progress.record({"epoch": 1, "loss": 0.69, "accuracy": 0.5})
    progress.record({"epoch": 2, "loss": 0.41, "accuracy": 0.8, "val_loss": 0.5, "val_accuracy": 0.75})

    running.refresh_from_db()
    assert running.metrics == [
        {"epoch": 1, "loss": 0.69, "accuracy": 0.5},
        {"epoch": 2, "loss": 0.41, "accuracy": 0.8, "val_loss": 0.5, "val_accuracy": 0.75},
    ]
    # Not throttled: two points in a row make two updates, each carrying all points so far.
    assert [len(message["job"]["metrics"]) for _, message in published] == [1, 2]
    assert f"job.{running.pk}" in published[-1][0]
    assert published[-1][1]["job"]["sequence"] == running.sequence == 2


def test_a_point_also_saves_the_progress_the_throttle_held_back(running, published):
    progress = JobProgress(running, min_interval=3600)
    progress(0.1, "Epoch 0")
    progress(0.5, "Epoch 1 of 2: loss 0.690")  # throttled: not saved, not published
    assert len(published) == 1
    progress.record({"epoch": 1, "loss": 0.69})
    running.refresh_from_db()
    assert (running.progress, running.message) == (0.5, "Epoch 1 of 2: loss 0.690")
    assert published[-1][1]["job"]["message"] == "Epoch 1 of 2: loss 0.690"


def test_the_first_progress_is_published_on_a_machine_started_moments_ago(running, published, monkeypatch):
    """time.monotonic() counts from boot: a worker started 5 s ago must not hold back its first
    progress (or its first cancel check) for the throttle's interval."""
    import types

    monkeypatch.setattr(job_service, "time", types.SimpleNamespace(monotonic=lambda: 5.0))
    Job.objects.filter(pk=running.pk).update(cancel_requested=True)
    progress = JobProgress(running, min_interval=3600, cancel_check_interval=3600)
    with pytest.raises(job_service.JobCancelled):
        progress(0.1, "Epoch 0")
    Job.objects.filter(pk=running.pk).update(cancel_requested=False)
    JobProgress(running, min_interval=3600)(0.1, "Epoch 0")
    assert [message["job"]["message"] for _, message in published] == ["Epoch 0"]


def test_points_are_stored_as_json_the_database_takes(running, published):
    numpy = pytest.importorskip("numpy")
    JobProgress(running).record(
        {
            "epoch": numpy.int64(3),
            "loss": float("nan"),
            "accuracy": numpy.float32(0.5),
            "val_loss": float("inf"),
            "note": "warm-up",
        }
    )
    running.refresh_from_db()
    assert running.metrics == [
        {"epoch": 3, "loss": None, "accuracy": 0.5, "val_loss": None, "note": "warm-up"}
    ]
    assert type(running.metrics[0]["epoch"]) is int
    with pytest.raises(TypeError, match="must be a number"):
        JobProgress(running).record({"epoch": 4, "loss": [0.1, 0.2]})


def test_only_the_newest_points_are_kept_and_sent(running, published):
    running.metrics = [{"epoch": n, "loss": 1 / n} for n in range(1, MAX_METRIC_POINTS + 1)]
    running.save()
    JobProgress(running).record({"epoch": MAX_METRIC_POINTS + 1, "loss": 0.0})
    running.refresh_from_db()
    assert len(running.metrics) == MAX_METRIC_POINTS
    assert running.metrics[0]["epoch"] == 2 and running.metrics[-1]["epoch"] == MAX_METRIC_POINTS + 1
    assert job_payload(running)["metrics"] == running.metrics


def test_payload_of_a_job_without_points(running):
    assert job_payload(running)["metrics"] == []


def test_the_api_shows_the_points_read_only(running, client_for, owner):
    running.metrics = [{"epoch": 1, "loss": 0.7, "accuracy": 0.5}]
    running.save()
    client = client_for(owner)
    body = client.get(f"/api/v1/jobs/{running.pk}/").json()
    assert body["metrics"] == [{"epoch": 1, "loss": 0.7, "accuracy": 0.5}]
    assert client.get("/api/v1/jobs/").json()["results"][0]["metrics"] == body["metrics"]
    assert client.patch(f"/api/v1/jobs/{running.pk}/", {"metrics": []}, format="json").status_code == 405
    running.refresh_from_db()
    assert running.metrics == body["metrics"]


def test_the_schema_describes_the_points(client, owner):
    client.force_login(owner)
    schema = client.get("/api/schema/?format=json").json()
    field = schema["components"]["schemas"]["Job"]["properties"]["metrics"]
    assert field["type"] == "array" and field["readOnly"] is True
    assert "epoch" in field["description"]


def test_the_job_page_has_a_curves_card_once_there_are_points(client, owner, running):
    client.force_login(owner)
    html = client.get(f"/jobs/{running.pk}/").content.decode()
    card = re.search(r"<section[^>]*data-job-metrics[^>]*>", html).group(0)
    assert " hidden" in card, "no points yet: the card waits, hidden, for the first one"

    running.metrics = [{"epoch": 1, "loss": 0.7, "accuracy": 0.5}]
    running.save()
    html = client.get(f"/jobs/{running.pk}/").content.decode()
    card = re.search(r"<section[^>]*data-job-metrics[^>]*>", html).group(0)
    assert " hidden" not in card and f'data-job-id="{running.pk}"' in card
    assert "Training curves" in html and "Values as a table" in html
    data = re.search(r'<script id="job-metrics" type="application/json">(.*?)</script>', html, re.S)
    assert json.loads(data.group(1)) == running.metrics


def test_the_admin_shows_a_job_with_points(client, admin_user, running):
    running.metrics = [{"epoch": 1, "loss": 0.7}]
    running.save()
    admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    response = client.get(f"/admin/portal/job/{running.pk}/change/")
    assert response.status_code == 200 and "loss" in response.content.decode()
