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

    project = models.ForeignKey("metadata.Project", on_delete=models.PROTECT, related_name="events")
    entity = models.ForeignKey("metadata.Entity", on_delete=models.PROTECT, related_name="events")
    property = models.ForeignKey("metadata.Property", on_delete=models.PROTECT, related_name="events")
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
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
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
        ]

    def __str__(self) -> str:
        return f"{self.entity_id}.{self.property_id} = {self.value!r} @ {self.timestamp}"
