"""Encrypted dataset storage, chunked uploads and sharing."""

from django.apps import AppConfig


class StorageConfig(AppConfig):
    """App configuration; signals and registrations are wired in `ready()`."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "storage"
    verbose_name = "Storage"
