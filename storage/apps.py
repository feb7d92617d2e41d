"""Encrypted dataset storage, chunked uploads and sharing."""

from django.apps import AppConfig


class StorageConfig(AppConfig):
    """App configuration; signals and registrations are wired in `ready()`."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "storage"
    verbose_name = "Storage"

    def ready(self) -> None:
        from portal.services.links import register_link_type
        from storage import tasks  # noqa: F401 - job kinds register themselves on import
        from storage.services.linking import resolve_datasets

        register_link_type("dataset", resolve_datasets)

        from portal.signals import demo_data_requested

        demo_data_requested.connect(_load_demo, dispatch_uid="storage-demo")


def _load_demo(sender, *, researcher, log, **kwargs) -> None:
    from storage.demo import load_demo_storage

    load_demo_storage(researcher, log=log)
