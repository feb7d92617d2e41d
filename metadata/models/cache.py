"""Caches of the matrix derived from the events: each row's current values and past snapshots.

They are not history (the events are), so they may be rewritten and rebuilt at any time:
`append_events` and `redact_event` keep them in step inside their own transactions, and
`manage.py rebuild_matrix_cache` (or migration 0004) derives them from the events again.
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now

from metadata.querysets import ProjectScopedQuerySet


class RowState(models.Model):
    """The current values of one row, `{property key: value}` for the cells that have one.

    `state` is JSON text rather than jsonb, stored uncompressed in the row (migration 0004): the
    current matrix reads thousands of these and hands them to clients without parsing, and jsonb
    would have to be printed as text, or compressed text unpacked, on every read.
    `event_count` (the row's set-events so far) decides when the next snapshot is due.
    """

    entity = models.OneToOneField(
        "metadata.Entity", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    project = models.ForeignKey("metadata.Project", on_delete=models.CASCADE, related_name="+")
    state = models.TextField(default="{}", help_text="JSON object {property key: value}.")
    event_count = models.PositiveIntegerField(default=0)
    last_event_at = models.DateTimeField(null=True, blank=True, help_text="Timestamp of the latest batch.")
    updated_at = models.DateTimeField(db_default=Now())

    objects = ProjectScopedQuerySet.as_manager()

    class Meta:
        ordering = ["entity"]

    def __str__(self) -> str:
        return f"Values of row {self.entity_id}"


class RowSnapshot(models.Model):
    """A row's values at `taken_at` and the changes after it until its next snapshot.

    A snapshot is taken by the batch that brings a row's event count to the next multiple of
    `SNAPSHOT_EVERY` (and by the row's first batch). The matrix at a past moment starts from each
    row's latest snapshot up to then and applies the changes in `tail` up to that moment, so no
    more than `SNAPSHOT_EVERY` events per row are ever folded.
    """

    entity = models.ForeignKey(
        "metadata.Entity", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    project = models.ForeignKey("metadata.Project", on_delete=models.CASCADE, related_name="+")
    taken_at = models.DateTimeField()
    state = models.TextField(help_text="JSON object {property key: value} at `taken_at`.")
    tail = models.TextField(
        default="[]",
        help_text="Later changes: [[µs since 1970, property id, value], …] (JSON).",
    )

    objects = ProjectScopedQuerySet.as_manager()

    class Meta:
        ordering = ["entity", "taken_at"]
        constraints = [
            models.UniqueConstraint(fields=["entity", "taken_at"], name="one_snapshot_per_row_and_moment")
        ]

    def __str__(self) -> str:
        return f"Row {self.entity_id} at {self.taken_at}"


class MatrixCache(models.Model):
    """Per project: the JSON key that stands for each property in its row states and snapshots.

    Keys are property keys, so states can be served as they are; when a property is renamed or
    stops being a column, readers translate through this map and the next write renames the keys.
    """

    project = models.OneToOneField(
        "metadata.Project", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    keys = models.JSONField(default=dict, blank=True, help_text="{JSON key: property id}")
    rebuilt_at = models.DateTimeField(null=True, blank=True)

    objects = ProjectScopedQuerySet.as_manager()

    class Meta:
        ordering = ["project"]

    def __str__(self) -> str:
        return f"Matrix cache of project {self.project_id}"
