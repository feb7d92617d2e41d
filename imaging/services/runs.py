"""Starting ingest runs from finished upload sessions (purpose "dicom"): the files are taken over
at once, the reading happens in the `imaging.ingest` job."""

from __future__ import annotations

import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction

from imaging.models import IngestRun
from portal.services.audit import record_audit_event
from portal.services.jobs import start_job
from storage.services.sessions import take_file

INGEST_KIND = "imaging.ingest"
MAX_UPLOADS_PER_RUN = 1000


def run_directory(run: IngestRun) -> Path:
    return Path(settings.PORTAL_DATA_DIR) / "dicom-ingest" / f"run-{run.pk}"


def start_ingest_from_uploads(
    *, project, user, uploads: list[int], label: str = ""
) -> tuple[IngestRun, object]:
    """Take the user's finished uploads (single files or ZIP archives) and start reading them."""
    with transaction.atomic():
        run = IngestRun.objects.create(project=project, source="upload", label=label[:255], created_by=user)
        source = run_directory(run) / "source"
        names = []
        for number, upload in enumerate(uploads):
            destination = source / f"{number:04d}"
            session = take_file(
                upload,
                user=user,
                purpose="dicom",
                destination=destination,
                used_by=f"imaging.ingest:{run.pk}",
            )
            names.append(session.file_name)
            (source / f"{number:04d}.name").write_text(session.file_name)
        if not run.label:
            run.label = names[0] if len(names) == 1 else f"{len(names)} files"
            run.save(update_fields=["label"])
        record_audit_event("imaging.ingest_started", actor=user, obj=run, files=len(names))
        job = start_job(INGEST_KIND, user=user, target=run, params={"run": run.pk})
    return run, job


def uploaded_items(run: IngestRun) -> list[tuple[str, Path]]:
    source = run_directory(run) / "source"
    items = []
    for path in sorted(source.glob("[0-9][0-9][0-9][0-9]")):
        name_file = path.with_suffix(".name")
        items.append((name_file.read_text() if name_file.exists() else path.name, path))
    return items


def discard_sources(run: IngestRun) -> None:
    shutil.rmtree(run_directory(run) / "source", ignore_errors=True)
