"""Re-key a dataset as the operator, with a root private key: `manage.py rekey_dataset <mnemonic>
--root-key FILE`.

For when no grant holder has a working key any more (keys lost): the root private key unwraps the
dataset's current key here, in this process, and the re-key job gets it only sealed. The new key
is wrapped for every grant holder's active keys (a user who registered a new key gets access
back) and every active root key.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from portal.models import Job
from storage import crypto
from storage.cli import read_private_key_file
from storage.models import Dataset, KeyWrap, RootKey
from storage.services import rekey
from storage.services.errors import StorageError


def read_private_key(path: str, password_file: str | None):
    """The root private key from `path` (PEM, JWK or compact text), asking for its password on a
    terminal when it is encrypted and no password file is given."""
    try:
        return read_private_key_file(path, password_file)
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from None
    except crypto.CryptoError as exc:
        raise CommandError(f"{path}: {exc}") from None


def unwrap_with_root_key(dataset: Dataset, private_key) -> tuple[bytes, RootKey]:
    """The dataset's current data key, unwrapped from its wrap for this root key."""
    fingerprint = crypto.public_key_fingerprint(private_key.public_key())
    root = RootKey.objects.filter(fingerprint=fingerprint).first()
    if root is None:
        raise CommandError(f"This private key is not a registered root key (fingerprint {fingerprint}).")
    wrap = KeyWrap.objects.filter(dataset=dataset, generation=dataset.generation, root_key=root).first()
    if wrap is None:
        raise CommandError(f"The key of {dataset.mnemonic} is not wrapped for the root key {root.name!r}.")
    try:
        key = crypto.unwrap_key(private_key, bytes(wrap.wrapped))
    except crypto.KeyUnwrapError as exc:
        raise CommandError(str(exc)) from None
    if crypto.key_fingerprint(key) != dataset.key_fingerprint:
        raise CommandError(f"The key unwrapped for {root.name!r} is not the key of {dataset.mnemonic}.")
    return key, root


class Command(BaseCommand):
    help = "Re-encrypt a dataset under a fresh key, unwrapping its current key with a root private key."

    def add_arguments(self, parser):
        parser.add_argument("mnemonic", help="The dataset, e.g. calm_brave_otter.")
        parser.add_argument("--root-key", required=True, help="File with the root private key.")
        parser.add_argument("--password-file", help="File whose first line is the private key's password.")
        parser.add_argument(
            "--rate-limit",
            type=float,
            default=None,
            metavar="MIB_PER_S",
            help="Re-encrypt at most this many MiB per second.",
        )
        parser.add_argument("--wait", action="store_true", help="Follow the job until it ends.")

    def handle(
        self,
        *args,
        mnemonic: str,
        root_key: str,
        password_file: str | None,
        rate_limit: float | None,
        wait: bool,
        **options,
    ):
        dataset = Dataset.objects.filter(mnemonic=mnemonic).first()
        if dataset is None:
            raise CommandError(f"No dataset {mnemonic!r}.")
        key, root = unwrap_with_root_key(dataset, read_private_key(root_key, password_file))
        try:
            job = rekey.start_rekey(
                dataset, key=key, operator=f"operator with root key {root.name}", rate_limit_mb_s=rate_limit
            )
        except StorageError as exc:
            raise CommandError(exc.message) from None
        del key
        self.stdout.write(f"Started re-keying {mnemonic}: job {job.pk}.")
        if wait:
            self.follow(job)

    def follow(self, job: Job) -> None:
        shown = None
        while True:
            job.refresh_from_db()
            line = f"{job.progress:4.0%} {job.message}"
            if line != shown:
                self.stdout.write(line)
                shown = line
            if job.is_finished:
                break
            time.sleep(1)
        if job.state != "succeeded":
            raise CommandError(f"The job {job.state}: {job.error or job.message}")
        self.stdout.write(self.style.SUCCESS(job.result.get("summary", "Done")))
