"""Background jobs of the imaging app (thin: each calls a service)."""

from __future__ import annotations

from rest_framework import serializers

from imaging.models import IngestRun, IngestState
from imaging.services.ingest import run_ingest
from imaging.services.runs import INGEST_KIND, discard_sources, uploaded_items
from portal.services.jobs import JobError, job_task


class IngestParams(serializers.Serializer):
    run = serializers.IntegerField(min_value=1)


@job_task(INGEST_KIND, label="Ingest DICOM", queue="default", params=IngestParams, generic_start=False)
def ingest_dicom(job, progress, *, run: int) -> dict:
    """Read the uploaded files (and archives) of an ingest run into the project's DICOM index."""
    record = IngestRun.objects.filter(pk=run).first()
    if record is None:
        raise JobError(f"Ingest run {run} no longer exists.")
    try:
        record = run_ingest(record, uploaded_items(record), progress)
    except Exception as exc:
        IngestRun.objects.filter(pk=run).update(state=IngestState.FAILED, message=str(exc)[:2000])
        raise
    finally:
        discard_sources(record)
    progress(1.0, record.message)
    return {
        "run": record.pk,
        "accepted": record.accepted,
        "duplicates": record.duplicates,
        "conflicts": record.conflicts,
        "rejected": record.rejected,
    }
