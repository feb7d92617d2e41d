"""The job runner's guarantees: time limits (real worker), safe retries, idempotence, cancel."""

from __future__ import annotations

import os
import time

import pytest

from conftest import start_worker
from portal.embedded import EmbeddedRedis, load_config
from portal.models import Job, JobState, User
from portal.services.datastore import store_bytes
from portal.services.jobs import JOB_KINDS, JobError, job_task

FLAKY_CALLS: list[int] = []


class TransientError(Exception):
    """Stands for an error that is safe to retry (e.g. a dropped connection)."""


@job_task("tests.flaky", label="Flaky test job", retry_on=(TransientError,), max_retries=2)
def flaky(job, progress, fail_times: int = 1, fail_with: str = "transient"):
    """Fails `fail_times` times, then succeeds (registered only inside the test process)."""
    FLAKY_CALLS.append(job.pk)
    progress(0.5, "half way")
    if len([c for c in FLAKY_CALLS if c == job.pk]) <= fail_times:
        if fail_with == "transient":
            raise TransientError("connection reset")
        if fail_with == "user":
            raise JobError("The input file is not a slide.")
        raise RuntimeError("bug: division by zero")
    return {"calls": len(FLAKY_CALLS)}


# The kind is known only while this module's tests run, so other modules see the real registry.
FLAKY_KIND = JOB_KINDS.pop("tests.flaky")


@pytest.fixture(autouse=True)
def _flaky_kind():
    FLAKY_CALLS.clear()
    JOB_KINDS[FLAKY_KIND.name] = FLAKY_KIND
    yield
    JOB_KINDS.pop(FLAKY_KIND.name, None)


def run_eagerly(job: Job) -> Job:
    """Run the kind's real Celery task in this process (Celery's own eager execution)."""
    JOB_KINDS[job.kind].task.apply(args=[job.pk])
    job.refresh_from_db()
    return job


@pytest.mark.django_db
def test_safe_errors_are_retried_until_success():
    job = Job.objects.create(kind="tests.flaky", params={"fail_times": 2})
    job = run_eagerly(job)
    assert job.state == JobState.SUCCEEDED
    assert job.attempts == 3 and len(FLAKY_CALLS) == 3


@pytest.mark.django_db
def test_retries_stop_after_max_retries():
    job = run_eagerly(Job.objects.create(kind="tests.flaky", params={"fail_times": 5}))
    assert job.state == JobState.FAILED
    assert job.error == "Failed after 3 attempts: connection reset"


@pytest.mark.django_db
def test_unexpected_errors_are_not_retried_and_hide_the_traceback_from_users():
    job = run_eagerly(Job.objects.create(kind="tests.flaky", params={"fail_with": "bug"}))
    assert job.state == JobState.FAILED and job.attempts == 1
    assert job.error.startswith("The job failed unexpectedly (RuntimeError)")
    assert "division by zero" in job.traceback and "division by zero" not in job.error


@pytest.mark.django_db
def test_user_facing_errors_are_shown_as_written():
    job = run_eagerly(Job.objects.create(kind="tests.flaky", params={"fail_with": "user"}))
    assert job.error == "The input file is not a slide." and job.traceback == ""


@pytest.mark.django_db
def test_a_finished_job_is_not_run_again():
    job = run_eagerly(Job.objects.create(kind="tests.flaky", params={"fail_times": 0}))
    assert job.state == JobState.SUCCEEDED
    run_eagerly(job)
    assert len(FLAKY_CALLS) == 1


@pytest.mark.django_db
def test_a_job_cancelled_while_queued_never_runs():
    job = Job.objects.create(kind="tests.flaky", cancel_requested=True)
    job = run_eagerly(job)
    assert job.state == JobState.CANCELLED and FLAKY_CALLS == []


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_time_limit_stops_a_job_in_a_real_worker(service_env, service_logs, tmp_path):
    from portal.celery import app

    redis_server = EmbeddedRedis(load_config(tmp_path / "own-redis"))
    redis_server.start()
    env = {**service_env, "REDIS_URL": redis_server.config.redis_url,
           "PORTAL_JOB_SOFT_TIME_LIMIT": "2", "PORTAL_JOB_TIME_LIMIT": "20"}
    worker = start_worker(env, service_logs, name="time-limit-worker")
    try:
        for index in range(8):
            store_bytes(f"slow/{index}.bin", os.urandom(1024 * 1024))
        admin = User.objects.create_user("boss", is_staff=True)
        job = Job.objects.create(kind="portal.scrub", created_by=admin, params={"rate_limit_mb_s": 1})
        # Celery sends the limits with the message; a web process configured like this worker
        # (PORTAL_JOB_SOFT_TIME_LIMIT=2) would send exactly these.
        with app.connection_for_write(redis_server.config.redis_url) as connection:
            JOB_KINDS["portal.scrub"].task.apply_async(
                args=[job.pk], queue="default", connection=connection,
                soft_time_limit=2, time_limit=20,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.is_finished:
                break
            time.sleep(0.2)
        assert job.state == JobState.FAILED, worker.output()
        assert job.error == "The job took longer than its time limit of 2 seconds and was stopped."
        assert 0 < job.progress < 1
    finally:
        worker.stop()
        redis_server.stop()
