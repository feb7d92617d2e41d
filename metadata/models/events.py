"""Events: every change to a value, never updated or deleted (a database trigger refuses it)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from metadata.querysets import ProjectScopedQuerySet


class EventKind(models.TextChoices):
    SET = "set", "Set"  # value set (null: cleared)
    REDACTION = "redaction", "Redaction"  # tombstone: an earlier event's value was removed


class Event(models.Model):
    """One value of one property of one entity, from `timestamp` on, until a later event.

    Events of one batch share its id and its timestamp (the transaction's), so a batch appears
    and can be undone as one. A correction is a new event. The only change the database allows
    is an admin's redaction of a value entered by mistake, which blanks `value` of that one event,
    sets `redacted`, and is recorded by a tombstone event and an audit event.
    """

    # The references are checked by the database once per INSERT statement and once per DELETE
    # of a referenced row (migration 0005), not by a foreign key constraint per row: for a batch
    # of 10,000 events those per-row checks took a quarter of the append.
    project = models.ForeignKey(
        "metadata.Project",
        on_delete=models.PROTECT,
        related_name="events",
        db_constraint=False,
        db_index=False,  # (project, timestamp) below serves
    )
    entity = models.ForeignKey(
        "metadata.Entity",
        on_delete=models.PROTECT,
        related_name="events",
        db_constraint=False,
        db_index=False,  # (entity, property, timestamp) below serves
    )
    property = models.ForeignKey(
        "metadata.Property", on_delete=models.PROTECT, related_name="events", db_constraint=False
    )
    kind = models.CharField(max_length=10, choices=EventKind.choices, default=EventKind.SET)
    value = models.JSONField(null=True, blank=True)
    redacted = models.BooleanField(default=False)
    target = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="For a redaction: the event whose value was removed.",
        db_constraint=False,
        db_index=False,  # the partial index below: only tombstones have one
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )
    timestamp = models.DateTimeField(db_default=Now(), editable=False)
    batch = models.UUIDField(default=uuid.uuid4, editable=False)
    comment = models.CharField(max_length=500, blank=True)

    objects = ProjectScopedQuerySet.as_manager()

    class Meta:
        ordering = ["timestamp", "id"]
        indexes = [
            models.Index(fields=["project", "timestamp"]),
            models.Index(fields=["entity", "property", "timestamp"]),
            models.Index(fields=["batch"]),
            models.Index(
                fields=["target"], condition=models.Q(target__isnull=False), name="metadata_event_tombstones"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.entity_id}.{self.property_id} = {self.value!r} @ {self.timestamp}"
