"""Demo storage for `./dev run`: a root key, a key for the demo researcher, two encrypted datasets.

Loaded by `manage.py load_demo_data` (through `portal.signals.demo_data_requested`); idempotent.
The demo private keys are written to `$PORTAL_STATE_DIR/demo-keys/` (only ever for the demo):
import `researcher-private-key.pem` on the Keys page to read the demo datasets in the browser,
and use `root-private-key.pem` with `python -m storage.cli recover` to try offline recovery.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from django.conf import settings
from django.db import transaction

from storage import crypto
from storage.models import Dataset, KeyState, RootKey, UserKey
from storage.services import uploads

DEMO_ROOT_KEY = "demo root key"
DEMO_DATASETS = [
    ("Tumour sample sheet", "sample-sheet.csv", 40_000),
    ("WGS reads, patient 1 (excerpt)", "P1-tumour.fastq", 5 * 1024 * 1024 + 321),
]


def key_directory() -> Path:
    return Path(settings.PORTAL_STATE_DIR) / "demo-keys"


def _write_private_key(name: str, private_key) -> Path:
    directory = key_directory()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(crypto.private_key_pem(private_key))
    os.chmod(path, 0o600)
    return path


def demo_content(name: str, size: int) -> bytes:
    """Deterministic text-like content for a demo file."""
    lines, total, index = [], 0, 0
    while total < size:
        digest = hashlib.sha256(f"{name}-{index}".encode()).hexdigest()
        line = f"@read{index}\n{digest.upper().replace('F', 'A')[:60]}\n+\n{'I' * 60}\n"
        lines.append(line)
        total += len(line)
        index += 1
    return "".join(lines).encode()[:size]


def load_demo_storage(researcher, *, log=print) -> None:
    if Dataset.objects.filter(owner=researcher).exists():
        return
    with transaction.atomic():
        if not RootKey.objects.filter(name=DEMO_ROOT_KEY).exists():
            root = crypto.generate_private_key()
            path = _write_private_key("root-private-key.pem", root)
            public = root.public_key()
            RootKey.objects.create(
                name=DEMO_ROOT_KEY,
                public_key=crypto.public_key_pem(public),
                fingerprint=crypto.public_key_fingerprint(public),
            )
            log(f"demo root key registered; its private key (demo only): {path}")
        private = crypto.generate_private_key()
        path = _write_private_key("researcher-private-key.pem", private)
        public = private.public_key()
        UserKey.objects.create(
            user=researcher,
            name="demo key",
            public_key=crypto.public_key_pem(public),
            fingerprint=crypto.public_key_fingerprint(public),
            state=KeyState.ACTIVE,
        )
        for name, file_name, size in DEMO_DATASETS:
            data = demo_content(file_name, size)
            dataset = uploads.start_upload(
                owner=researcher, uploaded_by=researcher, name=name, file_name=file_name, size=len(data)
            )
            for index in range(dataset.chunk_count):
                piece = data[index * dataset.chunk_size : (index + 1) * dataset.chunk_size]
                uploads.put_chunk(dataset, index, piece, hashlib.sha256(piece).hexdigest())
            uploads.finish_upload(dataset, actor=researcher)
    log(
        f"created {len(DEMO_DATASETS)} encrypted demo datasets for {researcher.username}; import {path} "
        "on the Keys page to read them"
    )
