"""`manage.py load_demo_data` also gives the demo researcher a key and two encrypted datasets."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import call_command

from storage import crypto
from storage.demo import DEMO_DATASETS, demo_content
from storage.models import Dataset, RootKey
from storage.recovery import RECOVERY_FILE_NAME, recover_dataset
from storage.services.access import wraps_for
from storage.services.downloads import plaintext

pytestmark = pytest.mark.django_db


def test_demo_datasets_are_readable_with_the_demo_keys(settings, tmp_path):
    settings.DEBUG = True
    settings.PORTAL_STATE_DIR = tmp_path / "state"
    settings.PORTAL_DATA_DIR = tmp_path / "data"
    out = io.StringIO()
    call_command("load_demo_data", stdout=out)
    call_command("load_demo_data", stdout=io.StringIO())  # idempotent
    assert "created 2 encrypted demo datasets for researcher" in out.getvalue()
    datasets = list(Dataset.objects.order_by("created_at"))
    assert [d.file_name for d in datasets] == [file_name for _, file_name, _ in DEMO_DATASETS]
    assert RootKey.objects.count() == 1
    keys = tmp_path / "state" / "demo-keys"
    researcher = crypto.load_private_key((keys / "researcher-private-key.pem").read_text())
    root = crypto.load_private_key((keys / "root-private-key.pem").read_text())
    for dataset in datasets:
        (wrap,) = wraps_for(dataset.owner, dataset)
        key = crypto.unwrap_key(researcher, bytes(wrap.wrapped))
        expected = demo_content(dataset.file_name, dataset.size)
        assert b"".join(plaintext(dataset, key)) == expected
        recovered = io.BytesIO()
        recover_dataset(
            Path(settings.PORTAL_DATA_DIR) / dataset.directory() / RECOVERY_FILE_NAME, root, recovered
        )
        assert recovered.getvalue() == expected
