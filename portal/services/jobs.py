"""Background jobs: registering job kinds, starting, running, reporting progress, cancelling.

Every app declares its heavy work with `@job_task(...)`; nothing else starts Celery work. A job
kind's function receives the `Job` and a `JobProgress` and returns a JSON-able result dict:

    @job_task("pathology.build_pyramid", label="Build tile pyramid", queue="tiles")
    def build_pyramid(job, progress, **params):
        progress(0.5, "Building level 3 of 7")
        return {"levels": 7}

The task itself takes only the job id (JSON), is enqueued after the transaction commits, and
records state, progress, log lines and errors on the `Job` row, publishing each change to the
job's channel groups (see `portal.consumers`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import numbers
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded, WorkerLostError
from celery.signals import task_failure
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.utils import timezone
from rest_framework import serializers

from portal.models import Job, JobState
from portal.models.jobs import FINAL_STATES
from portal.services.realtime import publish

logger = logging.getLogger(__name__)

# Points of a job's series kept on the row and sent with every update (the newest ones).
MAX_METRIC_POINTS = 1000


class JobError(Exception):
    """A failure whose message is meant for the user (shown as the job's error)."""


class JobCancelled(Exception):  # noqa: N818 - a signal, not an error
    """Raised inside a running job when a cancel was requested."""


class JobStateError(Exception):
    """The job is not in a state that allows the requested action (HTTP 409)."""


@dataclass
class JobKind:
    """A kind of background job users or services can start."""

    name: str
    label: str
    task: Any
    queue: str = "default"
    staff_only: bool = False
    # False: started only by its app's own endpoint (which prepares what it needs, e.g. sealed
    # keys), not through `POST /api/v1/jobs/`; such jobs can still be retried.
    generic_start: bool = True
    description: str = ""
    params: type[serializers.Serializer] | None = None
    retry_on: tuple[type[BaseException], ...] = field(default_factory=tuple)


JOB_KINDS: dict[str, JobKind] = {}


def content_type_of(obj) -> ContentType:
    """The content type of a model or instance, asked of the database rather than the process-wide
    cache: a long-running web process must not use an id that a flushed (test) database lost."""
    meta = obj._meta.concrete_model._meta
    found = ContentType.objects.filter(app_label=meta.app_label, model=meta.model_name).first()
    return found or ContentType.objects.get_for_model(obj)


def may_start(kind: JobKind | None, user) -> bool:
    """Whether `user` may start `kind` from the jobs page or `POST /api/v1/jobs/`."""
    return kind is not None and kind.generic_start and (user.is_staff or not kind.staff_only)


def startable_kinds(user) -> list[JobKind]:
    return sorted((k for k in JOB_KINDS.values() if may_start(k, user)), key=lambda k: k.name)


def job_task(
    kind: str,
    *,
    label: str,
    queue: str = "default",
    staff_only: bool = False,
    generic_start: bool = True,
    params: type[serializers.Serializer] | None = None,
    retry_on: tuple[type[BaseException], ...] = (),
    max_retries: int = 3,
    soft_time_limit: int | None = None,
    time_limit: int | None = None,
) -> Callable:
    """Register `func(job, progress, **params)` as job kind `kind` run by a Celery task.

    `retry_on` lists exceptions that are safe to retry (the work is idempotent for them, e.g. a
    lost database connection); everything else fails the job at once.
    """

    def decorator(func: Callable) -> Callable:
        @shared_task(
            name=f"jobs.{kind}",
            bind=True,
            acks_late=True,
            max_retries=max_retries,
            soft_time_limit=soft_time_limit or settings.PORTAL_JOB_SOFT_TIME_LIMIT,
            time_limit=time_limit or settings.PORTAL_JOB_TIME_LIMIT,
        )
        def task(self, job_id: int) -> None:
            execute_job(self, job_id, func, retry_on)

        JOB_KINDS[kind] = JobKind(
            name=kind, label=label, task=task, queue=queue, staff_only=staff_only,
            generic_start=generic_start, description=(func.__doc__ or "").strip().split("\n\n")[0],
            params=params, retry_on=retry_on,
        )
        func.task = task
        return func

    return decorator


# --- publishing -----------------------------------------------------------------------------


def job_groups(job: Job) -> list[str]:
    """Channel groups that hear about `job`: itself, its starter, its target, and staff."""
    groups = [f"job.{job.pk}", "jobs.staff"]
    if job.created_by_id:
        groups.append(f"jobs.user.{job.created_by_id}")
    if job.target_type_id and job.target_id is not None:
        groups.append(object_group(job.target_type.app_label, job.target_type.model, job.target_id))
    return groups


def object_group(app_label: str, model: str, object_id: int | str) -> str:
    return f"jobs.object.{app_label}.{model}.{object_id}"


def job_payload(job: Job) -> dict:
    """What clients learn about a job (never the traceback: that is for staff pages only)."""
    return {
        "id": job.pk,
        "kind": job.kind,
        "label": job.label,
        "state": job.state,
        "progress": job.progress,
        "message": job.message,
        "error": job.error,
        "sequence": job.sequence,
        "result_url": job.result_url,
        "target": (
            {"type": job.target_type.app_label + "." + job.target_type.model, "id": job.target_id}
            if job.target_type_id else None
        ),
        "created_by": job.created_by_id,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "duration": job.duration_seconds,
        "cancel_requested": job.cancel_requested,
        "metrics": job.metrics[-MAX_METRIC_POINTS:],
    }


def save_and_publish(job: Job, fields: list[str]) -> None:
    """Persist `fields` of `job`, bump its sequence and push the new state to its groups."""
    job.sequence += 1
    job.save(update_fields=[*fields, "sequence"])
    publish(job_groups(job), {"type": "job.update", "job": job_payload(job)})


# --- starting, cancelling, retrying -----------------------------------------------------------


def start_job(
    kind: str,
    *,
    user=None,
    target: models.Model | None = None,
    params: dict | None = None,
    retry_of: Job | None = None,
) -> Job:
    """Record a queued job and enqueue its task once the current transaction commits."""
    if kind not in JOB_KINDS:
        raise JobError(f"unknown job kind {kind!r}")
    job_kind = JOB_KINDS[kind]
    job = Job.objects.create(
        kind=kind,
        params=params or {},
        created_by=user if user is not None and user.is_authenticated else None,
        target_type=content_type_of(target) if target is not None else None,
        target_id=target.pk if target is not None else None,
        retry_of=retry_of,
        celery_task_id=str(uuid.uuid4()),
        message="Waiting for a worker",
    )
    transaction.on_commit(
        lambda: job_kind.task.apply_async(
            args=[job.pk], queue=job_kind.queue, task_id=job.celery_task_id
        )
    )
    return job


def request_cancel(job: Job) -> Job:
    """Ask a job to stop. A queued job is cancelled at once; a running one at its next report."""
    from portal.celery import app

    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.is_finished:
            raise JobStateError(f"the job has already {job.state}")
        job.cancel_requested = True
        fields = ["cancel_requested"]
        if job.state == JobState.QUEUED:
            job.state = JobState.CANCELLED
            job.finished_at = timezone.now()
            job.message = "Cancelled before it started"
            fields += ["state", "finished_at", "message"]
        else:
            job.message = "Cancelling…"
            fields.append("message")
        save_and_publish(job, fields)
    if job.state == JobState.CANCELLED:
        app.control.revoke(job.celery_task_id)
    return job


def retry_job(job: Job, user) -> Job:
    """Start a failed or cancelled job again as a new job (the old one stays as history)."""
    if job.state not in (JobState.FAILED, JobState.CANCELLED):
        raise JobStateError("only failed or cancelled jobs can be retried")
    return start_job(job.kind, user=user, target=job.target, params=job.params, retry_of=job)


# --- running ----------------------------------------------------------------------------------


class JobProgress:
    """Progress reporter handed to a running job; also where the job notices a cancel request.

    Calls are cheap: database writes and publishes are throttled to one every `min_interval`
    seconds, except for the first, the last (fraction 1), log lines and recorded points.
    """

    def __init__(self, job: Job, min_interval: float = 0.2, cancel_check_interval: float = 0.5):
        self.job = job
        self.min_interval = min_interval
        self.cancel_check_interval = cancel_check_interval
        # Never: the first call publishes and checks (time.monotonic() starts near 0 at boot, so
        # 0.0 would hold back a machine's first calls for `min_interval` after it started).
        self._last_publish = float("-inf")
        self._last_cancel_check = float("-inf")

    def __call__(self, fraction: float | None = None, message: str | None = None) -> None:
        self.check_cancelled()
        fields = []
        if fraction is not None:
            self.job.progress = min(max(float(fraction), 0.0), 1.0)
            fields.append("progress")
        if message is not None:
            self.job.message = message[:500]
            fields.append("message")
        now = time.monotonic()
        if fields and (now - self._last_publish >= self.min_interval or self.job.progress >= 1.0):
            self._last_publish = now
            save_and_publish(self.job, fields)

    def log(self, line: str) -> None:
        """Append a line to the job's log (kept, shown on the job page)."""
        self.job.log = [*self.job.log, [timezone.now().isoformat(), line]][-1000:]
        save_and_publish(self.job, ["log"])

    def record(self, point: dict) -> None:
        """Add a point to the job's series, e.g. `{"epoch": 3, "loss": 0.41, "accuracy": 0.87}`.

        Saved and published at once (points are rare, one per epoch), together with any progress
        or message the throttle held back. Pages plot the series live.
        """
        self.job.metrics = [*self.job.metrics, metric_point(point)][-MAX_METRIC_POINTS:]
        self._last_publish = time.monotonic()
        save_and_publish(self.job, ["metrics", "progress", "message"])

    def check_cancelled(self) -> None:
        now = time.monotonic()
        if now - self._last_cancel_check < self.cancel_check_interval:
            return
        self._last_cancel_check = now
        if Job.objects.filter(pk=self.job.pk, cancel_requested=True).exists():
            raise JobCancelled()


def metric_point(point: dict) -> dict:
    """`point` as JSON the database takes: plain numbers, and None for NaN or infinity."""
    clean = {}
    for name, value in point.items():
        if isinstance(value, bool) or value is None or isinstance(value, str):
            clean[str(name)] = value
        elif isinstance(value, numbers.Integral):
            clean[str(name)] = int(value)
        elif isinstance(value, numbers.Real):
            number = float(value)
            clean[str(name)] = number if math.isfinite(number) else None
        else:
            raise TypeError(f"metric {name!r} must be a number or text, not {type(value).__name__}")
    return clean


def _finish(job: Job, state: str, **fields: Any) -> None:
    job.state = state
    job.finished_at = timezone.now()
    for name, value in fields.items():
        setattr(job, name, value)
    save_and_publish(job, ["state", "finished_at", *fields])


def execute_job(task, job_id: int, func: Callable, retry_on: tuple) -> None:
    """Run one job inside its Celery task: state transitions, errors, cancel, safe retries."""
    job = Job.objects.filter(pk=job_id).select_related("target_type").first()
    if job is None or job.state in FINAL_STATES:
        return  # deleted, or already done: running again must not repeat the work
    if job.cancel_requested:
        _finish(job, JobState.CANCELLED, message="Cancelled before it started")
        return
    job.state = JobState.RUNNING
    job.started_at = job.started_at or timezone.now()
    job.attempts += 1
    job.worker = (task.request.hostname or "")[:200]
    job.message = "Started"
    save_and_publish(job, ["state", "started_at", "attempts", "worker", "message"])
    progress = JobProgress(job)
    retry_exc = None
    try:
        result = func(job, progress, **job.params)
    except JobCancelled:
        _finish(job, JobState.CANCELLED, message="Cancelled")
        return
    except SoftTimeLimitExceeded:
        _finish(job, JobState.FAILED, error=(
            f"The job took longer than its time limit of {task.soft_time_limit} seconds "
            "and was stopped."
        ), traceback=traceback.format_exc())
        return
    except JobError as exc:
        _finish(job, JobState.FAILED, error=str(exc), message="Failed")
        return
    except retry_on as exc:  # type: ignore[misc]
        if task.request.retries < task.max_retries:
            retry_exc = exc
        else:
            _finish(job, JobState.FAILED, error=f"Failed after {job.attempts} attempts: {exc}",
                    traceback=traceback.format_exc(), message="Failed")
            return
    except Exception as exc:
        logger.exception("job %s (%s) failed", job.pk, job.kind)
        _finish(job, JobState.FAILED, message="Failed", traceback=traceback.format_exc(), error=(
            f"The job failed unexpectedly ({type(exc).__name__}). "
            "An administrator can see the details on the job's page."
        ))
        return
    if retry_exc is not None:
        job.state = JobState.QUEUED
        job.message = f"Retrying after a temporary error: {retry_exc}"[:500]
        save_and_publish(job, ["state", "message"])
        raise task.retry(exc=retry_exc, countdown=min(2 ** task.request.retries, 60))
    result = result or {}
    _finish(job, JobState.SUCCEEDED, progress=1.0, message=str(result.get("summary") or "Done")[:500],
            result=result)


# --- jobs whose worker died -------------------------------------------------------------------


def fail_lost_job(job: Job, error: str) -> bool:
    """Mark a job failed whose worker process died; False if it had finished meanwhile."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.is_finished:
            return False
        if job.cancel_requested:
            _finish(job, JobState.CANCELLED, message="Cancelled")
        else:
            _finish(job, JobState.FAILED, message="Failed", error=error)
    return True


@task_failure.connect
def _job_process_died(sender=None, task_id=None, exception=None, **kwargs) -> None:
    """In the worker's main process: a job's process was killed (hard time limit, out of memory).

    The job's own code cannot record that, so the parent does; without this the job would stay
    `running` for ever.
    """
    if not isinstance(exception, (TimeLimitExceeded, WorkerLostError)) or not task_id:
        return
    job = Job.objects.filter(celery_task_id=task_id).first()
    if job is None:
        return
    if isinstance(exception, TimeLimitExceeded):
        error = (f"The job took longer than its hard time limit of {getattr(sender, 'time_limit', '?')} "
                 "seconds and was stopped.")
    else:
        error = ("The process running this job stopped unexpectedly (for example, out of memory). "
                 "Retry it; if it fails again, an administrator can look at the worker's log.")
    fail_lost_job(job, error)


def fail_orphaned_jobs() -> list[int]:
    """Fail running jobs whose worker sent no heartbeat for longer than the allowed age.

    Covers workers that died as a whole (machine lost, container killed). Run periodically by
    beat; returns the ids of the jobs it failed.
    """
    import redis

    from portal.celery import HEARTBEAT_PREFIX

    max_age = settings.PORTAL_WORKER_HEARTBEAT_MAX_AGE
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    try:
        alive = {key.decode().removeprefix(HEARTBEAT_PREFIX)
                 for key in client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=100)}
    finally:
        client.close()
    # A job started moments ago may belong to a worker whose first heartbeat is on its way.
    settled = timezone.now() - dt.timedelta(seconds=max_age)
    failed = []
    running = Job.objects.filter(state=JobState.RUNNING, started_at__lt=settled).exclude(worker="")
    for job in running.exclude(worker__in=alive):
        if fail_lost_job(job, (
            f"The worker running this job ({job.worker}) stopped while it was running. "
            "Retry it to run it again."
        )):
            logger.warning("job %s failed: its worker %s is gone", job.pk, job.worker)
            failed.append(job.pk)
    return failed
