"""`manage.py scan_ingress`: take the files in PORTAL_INGRESS_DIR/<project id>/ that stopped growing."""

from django.core.management.base import BaseCommand

from pathology.services.ingress import scan_ingress


class Command(BaseCommand):
    help = (
        "Take the files in the ingress folder that stopped growing (Celery beat does this every few seconds)."
    )

    def handle(self, *args, **options):
        added = scan_ingress()
        self.stdout.write(
            f"{len(added)} slide(s) added" + (f": {', '.join(map(str, added))}" if added else "")
        )
