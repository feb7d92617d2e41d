"""The ingress folder: files copied into `PORTAL_INGRESS_DIR/<project id>/` become slides of that
project once they stop growing (same size and modification time for `PORTAL_INGRESS_SETTLE_SECONDS`).

`scan_ingress()` runs every few seconds from Celery beat (`pathology.scan_ingress`) or once by
`manage.py scan_ingress`. Each scan notes what it saw (`IngressSighting`); a file unchanged since
a sighting old enough is moved into the data directory and converted, added by the project's
owner. Hidden and partial files (`.name`, `*.part`, `*.partial`, `*.tmp`, `*.crdownload`) are
left alone, so copy tools that write under a temporary name work.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from metadata.models import Project
from pathology.models import IngressSighting
from pathology.services.slides import SlideError, add_slide

logger = logging.getLogger(__name__)
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download")


def _candidates(root: Path):
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or not folder.name.isdigit():
            continue
        for path in sorted(folder.iterdir()):
            if (
                path.is_file()
                and not path.name.startswith(".")
                and not path.name.lower().endswith(PARTIAL_SUFFIXES)
            ):
                yield int(folder.name), path


def scan_ingress(now: dt.datetime | None = None) -> list[int]:
    """One pass over the ingress folder; returns the ids of the slides it added."""
    now = now or timezone.now()
    settle = dt.timedelta(seconds=settings.PATHOLOGY_INGRESS_SETTLE_SECONDS)
    root = Path(settings.PORTAL_INGRESS_DIR)
    seen = {s.path: s for s in IngressSighting.objects.all()}
    present = set()
    added = []
    projects: dict[int, Project | None] = {}
    for project_id, path in _candidates(root):
        key = str(path)
        present.add(key)
        try:
            stat = path.stat()
        except OSError:
            continue
        sighting = seen.get(key)
        if sighting is None or sighting.size != stat.st_size or sighting.mtime_ns != stat.st_mtime_ns:
            IngressSighting.objects.update_or_create(
                path=key,
                defaults={"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "seen_at": now, "problem": ""},
            )
            continue
        if now - sighting.seen_at < settle or sighting.problem:
            continue
        if project_id not in projects:
            projects[project_id] = Project.objects.filter(pk=project_id).select_related("owner").first()
        project = projects[project_id]
        if project is None:
            sighting.problem = f"There is no project {project_id}."
            sighting.save(update_fields=["problem"])
            logger.warning(
                "ingress: %s is in the folder of project %s, which does not exist", path, project_id
            )
            continue
        try:
            slide = add_slide(
                project=project, user=project.owner, source=path, file_name=path.name, ingress="folder"
            )
        except (SlideError, OSError) as exc:
            sighting.problem = str(exc)[:500]
            sighting.save(update_fields=["problem"])
            logger.warning("ingress: %s not taken: %s", path, exc)
            continue
        sighting.delete()
        added.append(slide.pk)
        logger.info("ingress: %s became slide %s of project %s", path, slide.pk, project.pk)
    IngressSighting.objects.exclude(path__in=present).delete()
    return added
