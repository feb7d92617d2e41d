"""Encrypted dataset storage, chunked uploads and sharing."""

from django.apps import AppConfig


class StorageConfig(AppConfig):
    """App configuration; signals and registrations are wired in `ready()`."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "storage"
    verbose_name = "Storage"

    def ready(self) -> None:
        from portal.services.links import register_link_type
        from storage.services.linking import resolve_datasets

        register_link_type("dataset", resolve_datasets)
