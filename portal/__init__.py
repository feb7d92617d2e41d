"""The portal's project package and core app.

The Celery app is loaded with Django (Celery's recommended layout), so that `shared_task`s bind to
it in every process: web, worker and management commands.
"""

from .celery import app as celery_app

__all__ = ["celery_app"]
