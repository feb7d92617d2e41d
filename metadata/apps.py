"""Projects, samples and their metadata as an append-only event timeline."""

from django.apps import AppConfig


class MetadataConfig(AppConfig):
    """App configuration; signals and registrations are wired in `ready()`."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "metadata"
    verbose_name = "Metadata"
