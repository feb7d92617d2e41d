"""Projects, samples and their metadata as an append-only event timeline."""

from django.apps import AppConfig


class MetadataConfig(AppConfig):
    """App configuration; signals and registrations are wired in `ready()`."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "metadata"
    verbose_name = "Metadata"

    def ready(self) -> None:
        from portal.signals import demo_data_requested

        demo_data_requested.connect(_load_demo, dispatch_uid="metadata-demo")


def _load_demo(sender, *, admin, researcher, log, **kwargs) -> None:
    from metadata.demo import load_demo_metadata

    load_demo_metadata(researcher, admin, log=log)
