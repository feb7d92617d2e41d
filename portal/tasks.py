"""Background jobs of the core app (thin: each calls a service)."""

from celery import shared_task
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from rest_framework import serializers

from portal.models import Job, JobState
from portal.services import datastore
from portal.services.jobs import JobError, fail_orphaned_jobs, job_task, start_job


class ScrubParams(serializers.Serializer):
    rate_limit_mb_s = serializers.FloatField(
        required=False, allow_null=True, min_value=0.1, max_value=100000,
        help_text="Read at most this many MiB per second (empty: as fast as the disk allows).",
    )


@job_task("portal.scrub", label="Integrity scrub", staff_only=True, params=ScrubParams)
def scrub_stored_files(job, progress, rate_limit_mb_s: float | None = None) -> dict:
    """Re-read every stored file and compare it with the checksum recorded when it was written."""
    try:
        result = datastore.scrub(progress, rate_limit_mb_s=rate_limit_mb_s)
    except datastore.DataStoreError as exc:
        raise JobError(str(exc)) from exc
    result["summary"] = (
        f"{result['verified']} of {result['files']} files verified; "
        f"{len(result['missing'])} missing, {len(result['damaged'])} damaged"
    )
    progress.log(result["summary"])
    return result


# --- periodic tasks (run by `celery beat`, see CELERY_BEAT_SCHEDULE in settings) ---------------


@shared_task(name="portal.start_scheduled_scrub", ignore_result=True)
def start_scheduled_scrub() -> int | None:
    """Start an integrity scrub as a job (shown on the Jobs page) unless one is still unfinished."""
    with transaction.atomic():
        # One scrub at a time, even if two beat processes were started by mistake.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('portal.scheduled_scrub'))")
        if Job.objects.filter(kind="portal.scrub", state__in=[JobState.QUEUED, JobState.RUNNING]).exists():
            return None
        limit = settings.PORTAL_SCRUB_RATE_LIMIT_MB_S
        job = start_job("portal.scrub", params={"rate_limit_mb_s": limit} if limit else {})
    return job.pk


@shared_task(name="portal.clear_expired_sessions", ignore_result=True)
def clear_expired_sessions() -> None:
    """Delete expired sign-in sessions from the database."""
    call_command("clearsessions")


@shared_task(name="portal.fail_orphaned_jobs", ignore_result=True)
def fail_jobs_of_lost_workers() -> list[int]:
    """Fail running jobs whose worker is gone (no heartbeat), so they can be retried."""
    return fail_orphaned_jobs()
