"""Scrubbing a dataset: sizes without a key, tags with one, damage reported and audited; the
recycle bin's scheduled purge."""

from __future__ import annotations

import base64
import datetime as dt
import os

import pytest
from django.utils import timezone

from portal.models import AuditEvent, Job, JobState
from portal.services.jobs import JOB_KINDS
from storage import crypto
from storage.models import Chunk, Dataset, DatasetState, KeyWrap
from storage.recovery import RECOVERY_FILE_NAME
from storage.services.chunkstore import chunk_path, generation_dir
from storage.tasks import purge_expired_datasets
from storage.tests.helpers import CHUNK

pytestmark = pytest.mark.django_db

DATA = os.urandom(3 * CHUNK + 99)  # four chunks


@pytest.fixture
def shared(team_dataset):
    """A dataset of the owner, shared with the writer (write) and the reader (read)."""
    return team_dataset(DATA)


def scrub(client, mnemonic: str, key: bytes | None = None):
    body = {"key": base64.b64encode(key).decode()} if key is not None else {}
    return client.post(f"/api/v1/datasets/{mnemonic}/scrub/", body, format="json")


def run(response) -> Job:
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    JOB_KINDS[job.kind].task.apply(args=[job.pk])
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.error, job.traceback)
    return job


def test_a_sound_dataset_scrubs_clean_with_and_without_the_key(shared, api):
    dataset, key = shared
    sizes = run(scrub(api("reader"), dataset.mnemonic))
    assert sizes.result["verified"] == 4 and sizes.result["damaged"] == []
    assert sizes.result["tags_checked"] is False and sizes.result["recovery_file"] == "ok"
    assert sizes.message.endswith("(sizes only); 0 damaged; recovery file: ok")
    tags = run(scrub(api("owner"), dataset.mnemonic, key))
    assert tags.result["tags_checked"] is True and tags.result["verified"] == 4
    events = AuditEvent.objects.filter(action="storage.scrubbed", object_id=str(dataset.pk))
    assert events.count() == 2 and {e.details["tags_checked"] for e in events} == {True, False}
    assert AuditEvent.objects.filter(action="storage.scrub_started").count() == 2
    row = str(Job.objects.filter(pk=tags.pk).values().get())
    for form in (key.hex(), base64.b64encode(key).decode()):
        assert form not in row


def test_damage_is_reported_per_chunk(shared, api):
    dataset, key = shared
    truncated = chunk_path(dataset, 0)
    truncated.write_bytes(truncated.read_bytes()[:-5])
    flipped = chunk_path(dataset, 2)
    data = bytearray(flipped.read_bytes())
    data[0] ^= 0x80
    flipped.write_bytes(bytes(data))
    chunk_path(dataset, 3).unlink()

    sizes = run(scrub(api("owner"), dataset.mnemonic))
    assert sizes.result["verified"] == 2  # a flipped bit keeps the size: only the tag shows it
    assert [(d["index"], d["problem"]) for d in sizes.result["damaged"]] == [
        (0, f"{CHUNK + 11} bytes stored, {CHUNK + 16} recorded"),
        (3, "its file is missing"),
    ]
    tags = run(scrub(api("owner"), dataset.mnemonic, key))
    assert tags.result["verified"] == 1
    assert [d["index"] for d in tags.result["damaged"]] == [0, 2, 3]
    assert tags.result["damaged"][1]["problem"] == "authentication failed: altered or moved"
    assert "1 of 4 chunk(s)" in tags.message and "3 damaged" in tags.message
    event = AuditEvent.objects.filter(action="storage.scrubbed").latest("id")
    assert event.details["damaged"] == [0, 2, 3]


def test_missing_rows_and_a_bad_recovery_file_are_reported(shared, api):
    dataset, _ = shared
    Chunk.objects.filter(dataset=dataset, index=1).delete()
    (generation_dir(dataset) / RECOVERY_FILE_NAME).write_text("{}")
    job = run(scrub(api("owner"), dataset.mnemonic))
    assert job.result["damaged"] == [{"index": 1, "problem": "missing from the chunk table"}]
    assert job.result["recovery_file"].startswith("invalid:")
    (generation_dir(dataset) / RECOVERY_FILE_NAME).unlink()
    assert run(scrub(api("owner"), dataset.mnemonic)).result["recovery_file"] == "missing"
    KeyWrap.objects.filter(dataset=dataset, root_key__isnull=False).delete()
    assert run(scrub(api("owner"), dataset.mnemonic)).result["recovery_file"] == "none"


@pytest.mark.parametrize(
    "role,with_key,expected",
    [
        ("anonymous", False, 401),
        ("stranger", False, 404),
        ("reader", False, 202),
        ("reader", True, 202),
        ("writer", True, 202),
        ("owner", False, 202),
        ("admin", False, 202),  # sizes only: an administrator without a grant never sees data
        ("admin", True, 403),
    ],
)
def test_who_may_scrub(shared, api, role, with_key, expected):
    dataset, key = shared
    response = scrub(api(role), dataset.mnemonic, key if with_key else None)
    assert response.status_code == expected, response.content
    assert Job.objects.filter(kind="storage.scrub").count() == (1 if expected == 202 else 0)


@pytest.mark.parametrize(
    "body,code",
    [
        ({"key": "zz"}, 400),
        ({"key": base64.b64encode(b"x" * 31).decode()}, 400),
        ({"sizes": True}, 400),
        ({"rate_limit_mb_s": 0}, 400),
        ({"key": crypto.new_data_key().hex()}, 403),
    ],
)
def test_bad_scrub_requests_are_4xx(shared, api, body, code):
    dataset, _ = shared
    response = api("owner").post(f"/api/v1/datasets/{dataset.mnemonic}/scrub/", body, format="json")
    assert response.status_code == code, response.content
    assert not Job.objects.exists()


def test_a_deleted_dataset_can_be_scrubbed_a_purged_one_not(shared, api, django_capture_on_commit_callbacks):
    dataset, _ = shared
    owner = api("owner")
    assert owner.delete(f"/api/v1/datasets/{dataset.mnemonic}/").status_code == 204
    assert run(scrub(owner, dataset.mnemonic)).result["damaged"] == []
    Dataset.objects.filter(pk=dataset.pk).update(purge_after=timezone.now() - dt.timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):  # the files go once the purge commits
        assert purge_expired_datasets.apply().get() == [dataset.mnemonic]
    dataset.refresh_from_db()
    assert dataset.state == DatasetState.PURGED and not generation_dir(dataset).parent.exists()
    assert scrub(owner, dataset.mnemonic).status_code == 409
