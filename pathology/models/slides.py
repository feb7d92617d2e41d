"""Slides, their tile pyramids and annotations.

A `Slide` belongs to a project (membership decides who sees it) and goes uploaded → hashing →
converting → reading metadata → ready, or failed with a message (a failed slide can be
converted again). Its source file stays under the data directory so it can be converted again
with other filter settings. A `Pyramid` is the converted file (`pathology/pyramid.py`), keyed
by the source's SHA-256 and the conversion settings: a second slide of the same file with the
same settings links to the existing pyramid instead of converting it again.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from metadata.querysets import ProjectScopedQuerySet


class SlideState(models.TextChoices):
    UPLOADED = "uploaded", "Uploaded"
    HASHING = "hashing", "Hashing"
    CONVERTING = "converting", "Converting"
    READING_METADATA = "reading_metadata", "Reading metadata"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class SlideQuerySet(ProjectScopedQuerySet):
    """Project members see a project's slides; writers add, change and delete them."""


class AnnotationQuerySet(ProjectScopedQuerySet):
    project_field = "slide__project"


class Pyramid(models.Model):
    """A converted slide: the pyramid file and what it holds (copied from its metadata table)."""

    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the source file.")
    options_key = models.CharField(max_length=64, help_text="SHA-256 of the conversion settings.")
    path = models.CharField(max_length=500, help_text="Pyramid file, relative to the data directory.")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    levels = models.PositiveSmallIntegerField()
    tile_size = models.PositiveSmallIntegerField()
    tile_format = models.CharField(max_length=8, default="jpeg")
    mpp_x = models.FloatField(null=True, blank=True, help_text="Microns per pixel at full resolution.")
    mpp_y = models.FloatField(null=True, blank=True)
    objective_power = models.FloatField(null=True, blank=True)
    vendor = models.CharField(max_length=100, blank=True)
    reader = models.CharField(max_length=100, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    filters = models.JSONField(default=dict, blank=True)
    tissue_tiles = models.PositiveIntegerField(default=0)
    background_tiles = models.PositiveIntegerField(default=0)
    removed_island_tiles = models.PositiveIntegerField(default=0)
    images = models.JSONField(default=list, blank=True, help_text="Names of the associated images.")
    file_size = models.BigIntegerField(default=0)
    seconds = models.FloatField(default=0, help_text="How long the conversion took.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sha256", "options_key"], name="pyramid_per_file_and_settings")
        ]

    def __str__(self) -> str:
        return f"{self.sha256[:12]}… {self.width}×{self.height}"

    @property
    def full_path(self):
        from pathlib import Path

        return Path(settings.PORTAL_DATA_DIR) / self.path


class Slide(models.Model):
    """One whole-slide image in a project, from upload to a viewable tile pyramid."""

    project = models.ForeignKey("metadata.Project", on_delete=models.CASCADE, related_name="slides")
    name = models.CharField(max_length=255)
    file_name = models.CharField(max_length=255)
    source_path = models.CharField(max_length=500, help_text="Source file, relative to the data directory.")
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    state = models.CharField(max_length=20, choices=SlideState.choices, default=SlideState.UPLOADED)
    message = models.TextField(blank=True, help_text="What the conversion is doing, or why it failed.")
    progress = models.FloatField(default=0)
    options = models.JSONField(default=dict, blank=True, help_text="Conversion settings for this slide.")
    pyramid = models.ForeignKey(
        Pyramid, null=True, blank=True, on_delete=models.SET_NULL, related_name="slides"
    )
    duplicate_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="An earlier slide of the same file whose pyramid this one shares.",
    )
    sample = models.ForeignKey(
        "metadata.Entity",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="slides",
        help_text="The specimen or patient this slide shows (stain and diagnosis come from its metadata).",
    )
    ingress = models.CharField(
        max_length=20, default="api", help_text="How it arrived: api, upload, folder, dataset."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SlideQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "state"])]

    def __str__(self) -> str:
        return self.name

    @property
    def source_full_path(self):
        from pathlib import Path

        return Path(settings.PORTAL_DATA_DIR) / self.source_path


class AnnotationKind(models.TextChoices):
    POINT = "point", "Point"
    RECTANGLE = "rectangle", "Rectangle"
    POLYGON = "polygon", "Polygon"


class Annotation(models.Model):
    """A labelled point, rectangle or polygon on a slide, in full-resolution pixels (GeoJSON
    geometry: Point or Polygon)."""

    slide = models.ForeignKey(Slide, on_delete=models.CASCADE, related_name="annotations")
    kind = models.CharField(max_length=10, choices=AnnotationKind.choices)
    label = models.CharField(max_length=200, blank=True)
    geometry = models.JSONField()
    properties = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AnnotationQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.label}".strip()


class IngressSighting(models.Model):
    """A file seen in the ingress folder: its size and time when last seen changing (a file is
    taken once it stays the same long enough), or why it could not be taken."""

    path = models.CharField(max_length=1000, unique=True)
    size = models.BigIntegerField()
    mtime_ns = models.BigIntegerField()
    seen_at = models.DateTimeField()
    problem = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.path
