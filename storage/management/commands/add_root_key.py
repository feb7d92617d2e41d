"""Register an operator's root key: `manage.py add_root_key NAME PUBLIC_KEY_FILE`.

Make the key pair offline (`python -m storage.cli keygen --out root.pem` prints the public key),
keep the private key offline and backed up, and register only the public key here. Datasets
uploaded or re-keyed from now on are also wrapped for it, and their recovery files name it.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from storage.models import Dataset, DatasetState
from storage.services.errors import StorageError
from storage.services.keys import add_root_key


class Command(BaseCommand):
    help = "Register a root public key (PEM, ssh-rsa or JWK file): every new dataset key is wrapped for it."

    def add_arguments(self, parser):
        parser.add_argument("name", help="A name for the key, e.g. 'recovery-2026'.")
        parser.add_argument("public_key_file", help="The public key file (never the private key).")

    def handle(self, *args, name: str, public_key_file: str, **options):
        try:
            text = Path(public_key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {public_key_file}: {exc}") from None
        if "PRIVATE KEY" in text or text.lstrip().startswith("RDPK"):
            raise CommandError(
                "That is a private key: register only the public key, keep the private one offline."
            )
        try:
            key = add_root_key(name, text)
        except StorageError as exc:
            raise CommandError(exc.message) from None
        older = Dataset.objects.filter(state=DatasetState.AVAILABLE).count()
        self.stdout.write(f"root key {key.name!r} registered (fingerprint {key.fingerprint}).")
        if older:
            self.stdout.write(
                f"{older} existing dataset(s) are not wrapped for it yet: each gets it at its next re-key."
            )
