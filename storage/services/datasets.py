"""Changing a dataset's description: its name, free text and project (audited)."""

from __future__ import annotations

from portal.services.audit import record_audit_event
from storage.models import Dataset

DETAIL_FIELDS = ("name", "description", "project")


def update_details(dataset: Dataset, changes: dict, *, actor, request=None) -> list[str]:
    """Apply `changes` (any of name, description, project) and audit what changed; returns the
    names of the changed fields. The caller has checked that `actor` may change the dataset and
    may add data to the project."""
    changed = {
        field: value
        for field, value in changes.items()
        if field in DETAIL_FIELDS and getattr(dataset, field) != value
    }
    if not changed:
        return []
    for field, value in changed.items():
        setattr(dataset, field, value)
    dataset.save(update_fields=list(changed))
    record_audit_event(
        "storage.dataset_changed", actor=actor, request=request, obj=dataset, fields=sorted(changed)
    )
    return sorted(changed)
