"""`manage.py rebuild_matrix_cache [--project N]`: derive the matrix caches from the events again."""

import time

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from metadata.models import Project
from metadata.services.matrix import rebuild_matrix_cache


class Command(BaseCommand):
    help = (
        "Rebuild the row states and snapshots of the derived matrix from the events (all projects, "
        "or --project). Safe to repeat; writers of the projects wait while it runs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--project", type=int, action="append", help="Project id (repeatable).")

    def handle(self, *args, **options):
        project_ids = options["project"]
        if project_ids:
            found = Project.objects.filter(pk__in=project_ids).values_list("pk", flat=True)
            missing = set(project_ids) - set(found)
            if missing:
                raise CommandError(f"No project with id {', '.join(map(str, sorted(missing)))}.")
        start = time.perf_counter()
        with transaction.atomic():
            counts = rebuild_matrix_cache(project_ids)
        self.stdout.write(
            f"{counts['rows']} row states and {counts['snapshots']} snapshots rebuilt "
            f"in {time.perf_counter() - start:.1f} s."
        )
