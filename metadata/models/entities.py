"""Entities: the rows of a project's sheets (samples, patients, specimens …)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from metadata.querysets import ProjectScopedQuerySet

from .properties import KEY_VALIDATOR


class EntityKind(models.Model):
    """A kind of row in one project, e.g. patient (prefix P) or sample (prefix S).

    `parent` names the kind its entities belong to (a sample belongs to a patient).
    """

    project = models.ForeignKey("metadata.Project", on_delete=models.CASCADE, related_name="entity_kinds")
    key = models.CharField(max_length=63, validators=[KEY_VALIDATOR])
    label = models.CharField(max_length=100)
    prefix = models.CharField(max_length=10, help_text="Start of the mnemonic ids, e.g. S for S-0001.")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    position = models.PositiveIntegerField(default=0)
    next_number = models.PositiveIntegerField(default=1, editable=False)

    objects = ProjectScopedQuerySet.as_manager()

    class Meta:
        ordering = ["project", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "key"], name="entity_kind_key_once"),
            models.UniqueConstraint(fields=["project", "prefix"], name="entity_kind_prefix_once"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.project})"


class Entity(models.Model):
    """One row: a sample, patient or specimen, known by a short mnemonic id like `S-0042`.

    Its values are not stored here: they are derived from the project's events.
    """

    project = models.ForeignKey("metadata.Project", on_delete=models.CASCADE, related_name="entities")
    kind = models.ForeignKey(EntityKind, on_delete=models.PROTECT, related_name="entities")
    mnemonic = models.CharField(max_length=30)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = ProjectScopedQuerySet.as_manager()

    class Meta:
        ordering = ["project", "kind", "id"]
        verbose_name_plural = "entities"
        constraints = [
            models.UniqueConstraint(fields=["project", "mnemonic"], name="mnemonic_once_per_project")
        ]
        indexes = [models.Index(fields=["project", "kind"])]

    def __str__(self) -> str:
        return self.mnemonic
