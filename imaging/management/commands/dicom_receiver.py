"""`manage.py dicom_receiver`: the DICOM network receiver (C-STORE, C-ECHO), until stopped."""

from django.conf import settings
from django.core.management.base import BaseCommand

from imaging.services.receiver import build_server


class Command(BaseCommand):
    help = "Receive DICOM over the network (C-STORE SCP, C-ECHO); the called AE title picks the project."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=None, help="default: PORTAL_DICOM_PORT")
        parser.add_argument("--ae-title", default=None, help="default: PORTAL_DICOM_AE_TITLE")

    def handle(self, *args, port=None, ae_title=None, **options):
        import logging

        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # not a line per instance
        self.stdout.write(
            f"DICOM receiver {ae_title or settings.IMAGING_AE_TITLE} on "
            f"{settings.IMAGING_DICOM_HOST}:{port or settings.IMAGING_DICOM_PORT}; call it as PROJECT<id> "
            "or a title of PORTAL_DICOM_AE_ROUTES"
        )
        build_server(port, ae_title, block=True)
