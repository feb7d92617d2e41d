"""The job runner's guarantees: time limits (real worker), safe retries, idempotence, cancel."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from conftest import start_worker
from portal.embedded import EmbeddedRedis, load_config
from portal.models import Job, JobState, User
from portal.services.datastore import store_bytes
from portal.services.jobs import JOB_KINDS, JobError, fail_orphaned_jobs, job_task

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


@pytest.fixture
def own_services(service_env, service_logs, tmp_path):
    """A Redis of this test's own and a worker on it, so killing things disturbs no other test."""
    redis_server = EmbeddedRedis(load_config(tmp_path / "own-redis"))
    redis_server.start()
    env = {**service_env, "REDIS_URL": redis_server.config.redis_url}
    started = []

    def worker(name: str, **extra_env: str):
        started.append(start_worker({**env, **extra_env}, service_logs, name=name))
        return started[-1]

    yield redis_server.config.redis_url, worker
    for process in started:
        process.stop()
    redis_server.stop()


def slow_scrub(redis_url: str, **limits) -> Job:
    """Enqueue a scrub of 8 MiB at 1 MiB/s on the worker listening on `redis_url`."""
    from portal.celery import app

    for index in range(8):
        store_bytes(f"slow/{index}.bin", os.urandom(1024 * 1024))
    admin = User.objects.create_user(f"boss{time.monotonic_ns()}", is_staff=True)
    job = Job.objects.create(kind="portal.scrub", created_by=admin, params={"rate_limit_mb_s": 1},
                             celery_task_id=str(uuid.uuid4()))
    with app.connection_for_write(redis_url) as connection:
        JOB_KINDS["portal.scrub"].task.apply_async(
            args=[job.pk], queue="default", connection=connection, task_id=job.celery_task_id, **limits)
    return job


def wait_for(job: Job, condition, timeout: float = 30) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if condition(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job.pk} stayed {job.state} ({job.message})")


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_time_limit_stops_a_job_in_a_real_worker(own_services):
    redis_url, start = own_services
    worker = start("time-limit-worker", PORTAL_JOB_SOFT_TIME_LIMIT="2", PORTAL_JOB_TIME_LIMIT="20")
    # Celery sends the limits with the message; a web process configured like this worker
    # (PORTAL_JOB_SOFT_TIME_LIMIT=2) would send exactly these.
    job = wait_for(slow_scrub(redis_url, soft_time_limit=2, time_limit=20), lambda j: j.is_finished)
    assert job.state == JobState.FAILED, worker.output()
    assert job.error == "The job took longer than its time limit of 2 seconds and was stopped."
    assert 0 < job.progress < 1


def children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_job_whose_process_is_killed_fails_with_a_message(own_services):
    redis_url, start = own_services
    worker = start("killed-child-worker")
    job = wait_for(slow_scrub(redis_url), lambda j: j.state == JobState.RUNNING and j.progress > 0)
    for child in children_of(worker.proc.pid):  # e.g. the kernel's out-of-memory killer
        os.kill(child, signal.SIGKILL)
    job = wait_for(job, lambda j: j.is_finished)
    assert job.state == JobState.FAILED, worker.output()
    assert job.error.startswith("The process running this job stopped unexpectedly")
    assert worker.alive()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_running_jobs_of_a_vanished_worker_are_failed(own_services, settings):
    import redis

    redis_url, start = own_services
    settings.REDIS_URL = redis_url
    worker = start("vanishing-worker")
    job = wait_for(slow_scrub(redis_url), lambda j: j.state == JobState.RUNNING and j.progress > 0)
    # A job on a worker that still sends heartbeats is left alone.
    redis.Redis.from_url(redis_url).set("portal:worker:alive@test", "{}")
    busy = Job.objects.create(kind="portal.scrub", state=JobState.RUNNING, worker="alive@test",
                              started_at=timezone.now() - dt.timedelta(hours=1))
    os.killpg(worker.proc.pid, signal.SIGKILL)  # machine lost: no shutdown handlers run
    assert fail_orphaned_jobs() == []  # its heartbeat has not expired yet
    time.sleep(settings.PORTAL_WORKER_HEARTBEAT_MAX_AGE + 1)
    assert fail_orphaned_jobs() == [job.pk]
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert job.error.startswith(f"The worker running this job ({worker.hostname}) stopped")
    busy.refresh_from_db()
    assert busy.state == JobState.RUNNING
