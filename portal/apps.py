"""The core app: users, jobs, audit log, API base, websocket for job progress."""

from django.apps import AppConfig


class PortalConfig(AppConfig):
    """Core app configuration; wires audit signals and the core job kinds."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        from portal import signals, tasks  # noqa: F401 - registrations happen on import
        from portal.api import schema  # noqa: F401
