"""The recycle bin: deleting moves a dataset there for a retention period; then it is purged."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.services.audit import record_audit_event
from storage.models import Chunk, Dataset, DatasetState, GrantLevel, KeyWrap
from storage.services import chunkstore
from storage.services.access import require_grant
from storage.services.errors import ConflictError


@transaction.atomic
def delete_dataset(dataset: Dataset, *, actor, request=None) -> Dataset:
    """Move to the recycle bin (restorable until `purge_after`). Unfinished uploads go too."""
    require_grant(actor, dataset, GrantLevel.WRITE)
    if dataset.state in (DatasetState.DELETED, DatasetState.PURGED):
        raise ConflictError(f"{dataset.mnemonic} is already {dataset.get_state_display().lower()}.")
    now = timezone.now()
    Dataset.objects.filter(pk=dataset.pk).update(
        state=DatasetState.DELETED,
        deleted_at=now,
        purge_after=now + dt.timedelta(days=settings.STORAGE_RETENTION_DAYS),
        sealed_key="",
        sealed_until=None,
    )
    dataset.refresh_from_db()
    record_audit_event("storage.dataset_deleted", actor=actor, request=request, obj=dataset)
    return dataset


@transaction.atomic
def restore_dataset(dataset: Dataset, *, actor, request=None) -> Dataset:
    require_grant(actor, dataset, GrantLevel.WRITE)
    if dataset.state != DatasetState.DELETED:
        raise ConflictError(f"{dataset.mnemonic} is not in the recycle bin.")
    # An upload that was deleted unfinished comes back as unfinished; its key holder resumes it.
    state = DatasetState.AVAILABLE if dataset.completed_at else DatasetState.UPLOADING
    Dataset.objects.filter(pk=dataset.pk).update(state=state, deleted_at=None, purge_after=None)
    dataset.refresh_from_db()
    record_audit_event("storage.dataset_restored", actor=actor, request=request, obj=dataset)
    return dataset


def purge_dataset(dataset: Dataset, *, actor=None) -> None:
    """Remove the chunk files, the chunk table and every wrap; the row stays as a tombstone."""
    with transaction.atomic():
        dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
        if dataset.state != DatasetState.DELETED:
            raise ConflictError(f"{dataset.mnemonic} is not in the recycle bin.")
        KeyWrap.objects.filter(dataset=dataset).delete()
        Chunk.objects.filter(dataset=dataset).delete()
        Dataset.objects.filter(pk=dataset.pk).update(state=DatasetState.PURGED)
        record_audit_event("storage.dataset_purged", actor=actor, obj=dataset)
        transaction.on_commit(lambda: chunkstore.remove_dataset_files(dataset))


def purge_expired(now: dt.datetime | None = None) -> list[str]:
    """Purge every dataset whose time in the recycle bin is over; returns their mnemonics."""
    now = now or timezone.now()
    done = []
    for dataset in Dataset.objects.filter(state=DatasetState.DELETED, purge_after__lte=now):
        purge_dataset(dataset)
        done.append(dataset.mnemonic)
    return done
