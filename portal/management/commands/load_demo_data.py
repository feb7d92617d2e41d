"""Load demo users and demo files for a local trial of the portal (idempotent)."""

import hashlib

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from portal.devstack import DEMO_USERS
from portal.models import StoredFile, User
from portal.services.datastore import store_chunks
from portal.signals import demo_data_requested

DEMO_FILES = 24
DEMO_FILE_SIZE = 4 * 1024 * 1024


def demo_bytes(index: int, size: int):
    """Deterministic pseudo-random content, generated in 1 MiB blocks."""
    block = 0
    while block * 1024 * 1024 < size:
        seed = hashlib.sha256(f"demo-{index}-{block}".encode()).digest()
        yield (seed * (1024 * 1024 // len(seed)))[: min(1024 * 1024, size - block * 1024 * 1024)]
        block += 1


class Command(BaseCommand):
    help = "Create demo users (admin, researcher) and demo files in the data directory."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true",
                            help="Also run when DEBUG is off (never on a production system).")

    def handle(self, *args, force=False, **options):
        if not settings.DEBUG and not force:
            raise CommandError("Demo data has well-known passwords; refusing without --force "
                               "because DEBUG is off.")
        for username, password, role in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username,
                defaults={"email": f"{username}@example.org", "first_name": role.title()},
            )
            if created:
                user.is_staff = user.is_superuser = role == "administrator"
                user.set_password(password)
                user.save()
                self.stdout.write(f"created user {username}")
        written = 0
        for index in range(DEMO_FILES):
            path = f"demo/sample-{index:02d}.bin"
            if not StoredFile.objects.filter(path=path).exists():
                store_chunks(path, demo_bytes(index, DEMO_FILE_SIZE))
                written += 1
        demo_data_requested.send(
            sender=self.__class__,
            admin=User.objects.get(username=DEMO_USERS[0][0]),
            researcher=User.objects.get(username=DEMO_USERS[1][0]),
            log=self.stdout.write,
        )
        self.stdout.write(self.style.SUCCESS(
            f"demo data ready ({written} new files in {settings.PORTAL_DATA_DIR})"
        ))
