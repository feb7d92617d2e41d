"""Whole-slide images: ingest, tile pyramids, viewer and AI."""

from django.apps import AppConfig


class PathologyConfig(AppConfig):
    """App configuration; signals and registrations are wired in `ready()`."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "pathology"
    verbose_name = "Pathology"

    def ready(self) -> None:
        from pathology import tasks  # noqa: F401 - job kinds register themselves on import
        from pathology.services.linking import resolve_slides
        from portal.services.links import register_link_type

        register_link_type("slide", resolve_slides)

        from storage.services.sessions import register_upload_purpose

        register_upload_purpose("slide", "whole-slide image")

        from portal.signals import demo_data_requested

        demo_data_requested.connect(_load_demo, dispatch_uid="pathology-demo")


def _load_demo(sender, *, admin, researcher, log, **kwargs) -> None:
    from pathology.demo import load_demo_slides

    load_demo_slides(researcher, admin, log=log)
