"""Background jobs of the storage app (thin: each calls a service).

Re-keying and scrubbing run on the `crypto` queue. Their parameters carry data keys only sealed
(`storage.services.rekey.seal_for_job`); they are started from the dataset's API endpoints or the
`rekey_dataset` command, which check the caller's right and the key first.
"""

from __future__ import annotations

from celery import shared_task
from rest_framework import serializers

from portal.services.audit import record_audit_event
from portal.services.jobs import JobError, job_task
from storage.services import lifecycle, rekey, scrub


class RekeyParams(serializers.Serializer):
    dataset = serializers.IntegerField(min_value=1)
    generation = serializers.IntegerField(min_value=1)
    sealed_old_key = serializers.CharField(max_length=500)
    sealed_new_key = serializers.CharField(max_length=500)
    new_key_fingerprint = serializers.RegexField(r"^[0-9a-f]{64}$")
    rate_limit_mb_s = serializers.FloatField(required=False, allow_null=True, min_value=0.1, max_value=100000)
    operator = serializers.CharField(required=False, max_length=200)


class ScrubParams(serializers.Serializer):
    dataset = serializers.IntegerField(min_value=1)
    generation = serializers.IntegerField(min_value=1)
    sealed_key = serializers.CharField(required=False, max_length=500)
    rate_limit_mb_s = serializers.FloatField(required=False, allow_null=True, min_value=0.1, max_value=100000)


@job_task(rekey.REKEY_KIND, label="Re-key dataset", queue="crypto", params=RekeyParams, generic_start=False)
def rekey_dataset(job, progress, **params) -> dict:
    """Re-encrypt a dataset under a fresh key and switch to it atomically (start it from the
    dataset: POST /api/v1/datasets/<mnemonic>/rekey/ with its current key)."""
    try:
        return rekey.run_rekey(job, progress, **params)
    except JobError as exc:
        record_audit_event(
            "storage.rekey_failed",
            actor=job.created_by if job.created_by_id else None,
            object_type="storage.dataset",
            object_id=str(params.get("dataset", "")),
            job=job.pk,
            error=str(exc),
        )
        raise


@job_task(scrub.SCRUB_KIND, label="Scrub dataset", queue="crypto", params=ScrubParams, generic_start=False)
def scrub_dataset(job, progress, **params) -> dict:
    """Re-read a dataset's stored chunks: sizes, and with its key the tags (start it from the
    dataset: POST /api/v1/datasets/<mnemonic>/scrub/)."""
    return scrub.run_scrub(job, progress, **params)


@shared_task(name=rekey.OLD_FILES_TASK, queue=rekey.OLD_FILES_QUEUE, ignore_result=True)
def remove_old_generations(dataset_id: int, below: int) -> list[int]:
    """Remove a re-keyed dataset's files of generations older than `below` (sent by the re-key
    once its grace period is over; a dataset gone meanwhile has nothing left to remove)."""
    from storage.models import Dataset

    dataset = Dataset.objects.filter(pk=dataset_id).first()
    return [] if dataset is None else rekey.remove_old_generations(dataset, below=below)


# --- periodic tasks (run by `celery beat`, see CELERY_BEAT_SCHEDULE in settings) ---------------


@shared_task(name="storage.purge_expired_datasets", ignore_result=True)
def purge_expired_datasets() -> list[str]:
    """Purge datasets whose time in the recycle bin is over (their files and wraps go)."""
    return lifecycle.purge_expired()


@shared_task(name="storage.purge_expired_upload_sessions", ignore_result=True)
def purge_expired_upload_sessions() -> int:
    """Remove plain upload sessions (slides, DICOM) that were not finished or used in time."""
    from storage.services.sessions import purge_expired_sessions

    return purge_expired_sessions()
