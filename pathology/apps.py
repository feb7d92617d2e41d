"""Whole-slide images: ingest, tile pyramids, viewer and AI."""

from django.apps import AppConfig


class PathologyConfig(AppConfig):
    """App configuration; signals and registrations are wired in `ready()`."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "pathology"
    verbose_name = "Pathology"
