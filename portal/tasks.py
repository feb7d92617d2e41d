"""Background jobs of the core app (thin: each calls a service)."""

from rest_framework import serializers

from portal.services import datastore
from portal.services.jobs import JobError, job_task


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
