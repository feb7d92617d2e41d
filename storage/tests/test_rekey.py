"""Re-keying: a fresh key for every chunk, wraps for every holder and root key, one atomic switch,
and a rerun that finishes after a crash at any stage. Jobs run in this process through their real
Celery task (Celery's eager `apply`)."""

from __future__ import annotations

import base64
import io
import os
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connections, transaction

from portal.models import AuditEvent, Job, JobState
from portal.services.jobs import JOB_KINDS, fail_lost_job, retry_job
from storage import crypto
from storage.models import Chunk, Dataset, KeyState, KeyWrap, RootKey, UserKey
from storage.recovery import RECOVERY_FILE_NAME, recover_dataset
from storage.services import rekey
from storage.services.chunkstore import chunk_path, generation_dir
from storage.tests.helpers import CHUNK, key_header, unwrap

pytestmark = pytest.mark.django_db

DATA = os.urandom(5 * CHUNK + 777)  # six chunks


@pytest.fixture(autouse=True)
def _no_grace(settings):
    settings.STORAGE_REKEY_GRACE_SECONDS = 0


@pytest.fixture
def shared(team_dataset):
    """A dataset of the owner, shared with the writer (write) and the reader (read)."""
    return team_dataset(DATA)


def run(job: Job) -> Job:
    """Run the job kind's real Celery task here, as a worker would."""
    JOB_KINDS[job.kind].task.apply(args=[job.pk])
    job.refresh_from_db()
    return job


def start(client, mnemonic: str, key: bytes, **extra):
    return client.post(
        f"/api/v1/datasets/{mnemonic}/rekey/", {"key": base64.b64encode(key).decode(), **extra}, format="json"
    )


def download(client, mnemonic: str, key: bytes):
    response = client.get(f"/api/v1/datasets/{mnemonic}/content/", headers=key_header(key))
    body = b"".join(response.streaming_content) if response.status_code == 200 else response.content
    return response.status_code, body


def job_keys(job: Job) -> tuple[bytes, bytes]:
    """The old and new keys the job carries sealed (what only the server can open)."""
    dataset = Dataset.objects.get(pk=job.params["dataset"])
    generation = job.params["generation"]
    return (
        rekey.unseal_for_job(job.params["sealed_old_key"], f"rekey-old:{dataset.mnemonic}:g{generation}"),
        rekey.unseal_for_job(job.params["sealed_new_key"], f"rekey-new:{dataset.mnemonic}:g{generation}"),
    )


def encodings(key: bytes) -> list[str]:
    return [key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode().rstrip("=")]


def assert_nowhere(key: bytes, *texts: str) -> None:
    for text in texts:
        for form in encodings(key):
            assert form not in text


def test_rekey_switches_every_holder_and_root_key_to_a_new_key(shared, api, private_keys, tmp_path):
    dataset, old_key = shared
    # The owner has a second active key and a pending one: the first is wrapped again, not the second.
    extra = {}
    for state, private in (
        (KeyState.ACTIVE, crypto.generate_private_key()),
        (KeyState.PENDING, private_keys["admin"]),
    ):
        public = private.public_key()
        extra[state] = UserKey.objects.create(
            user=dataset.owner,
            name=f"{state} key",
            public_key=crypto.public_key_pem(public),
            fingerprint=crypto.public_key_fingerprint(public),
            state=state,
        )
    owner = api("owner")
    response = start(owner, dataset.mnemonic, old_key)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["kind"] == "storage.rekey" and body["state"] == "queued"
    assert response.headers["Location"].endswith(f"/api/v1/jobs/{body['id']}/")
    job = run(Job.objects.get(pk=body["id"]))
    assert job.state == JobState.SUCCEEDED, (job.error, job.traceback)
    assert job.progress == 1.0 and job.result["generation"] == 2 and job.result["reused"] == 0
    assert job.result["wraps"] == 4 and job.result["root_wraps"] == 1  # owner ×2, writer, reader; root

    dataset.refresh_from_db()
    assert dataset.generation == 2 and dataset.key_fingerprint != crypto.key_fingerprint(old_key)
    assert set(Chunk.objects.filter(dataset=dataset).values_list("generation", flat=True)) == {2}
    wraps = KeyWrap.objects.filter(dataset=dataset)
    assert set(wraps.values_list("generation", flat=True)) == {2}
    assert extra[KeyState.ACTIVE].wraps.count() == 1 and extra[KeyState.PENDING].wraps.count() == 0
    assert wraps.filter(root_key__isnull=False).count() == RootKey.objects.active().count() == 1

    # Every holder unwraps the same new key and reads the same bytes; the old key is refused.
    new_keys = {
        role: unwrap(api(role), dataset.mnemonic, private_keys[role])
        for role in ("owner", "writer", "reader")
    }
    assert len(set(new_keys.values())) == 1
    new_key = new_keys["owner"]
    assert crypto.key_fingerprint(new_key) == dataset.key_fingerprint
    for role in ("owner", "writer", "reader"):
        assert download(api(role), dataset.mnemonic, new_key) == (200, DATA)
    status, body = download(owner, dataset.mnemonic, old_key)
    assert status == 403 and b"wrong_key" in body
    # Nor does the old key open the stored chunks themselves; the old generation's files are gone.
    for chunk in Chunk.objects.filter(dataset=dataset):
        ciphertext = chunk_path(dataset, chunk.index).read_bytes()
        with pytest.raises(crypto.ChunkIntegrityError):
            crypto.decrypt_chunk(old_key, dataset.mnemonic, chunk.index, bytes(chunk.nonce), ciphertext)
    assert not generation_dir(dataset, 1).exists()
    assert dataset.sha256 == crypto.dataset_hash(c.sha256 for c in Chunk.objects.filter(dataset=dataset))

    # The new generation's recovery file recovers the data with the root key alone.
    out = io.BytesIO()
    result = recover_dataset(generation_dir(dataset) / RECOVERY_FILE_NAME, private_keys["root"], out)
    assert out.getvalue() == DATA and result.dataset_hash == dataset.sha256

    # The audit log has the start and the switch; no key in any form is in the job or the log.
    actions = list(AuditEvent.objects.filter(object_id=str(dataset.pk)).values_list("action", flat=True))
    assert "storage.rekey_started" in actions and "storage.rekeyed" in actions
    rekeyed = AuditEvent.objects.get(action="storage.rekeyed", object_id=str(dataset.pk))
    assert rekeyed.actor == dataset.owner and rekeyed.details["generation"] == 2
    row = Job.objects.filter(pk=job.pk).values().get()
    texts = [str(row), str(list(AuditEvent.objects.values("details")))]
    for key in (old_key, new_key):
        assert_nowhere(key, *texts)


def test_revoked_grants_and_keys_get_no_new_wrap(shared, api, people, private_keys):
    dataset, old_key = shared
    owner = api("owner")
    assert (
        owner.delete(f"/api/v1/datasets/{dataset.mnemonic}/grants/{people['writer'].pk}/").status_code == 204
    )
    reader_key = UserKey.objects.get(user=people["reader"])
    assert api("reader").post(f"/api/v1/keys/{reader_key.pk}/revoke/").status_code == 200
    job = run(Job.objects.get(pk=start(owner, dataset.mnemonic, old_key).json()["id"]))
    assert job.state == JobState.SUCCEEDED, job.error
    holders = set(
        KeyWrap.objects.filter(dataset=dataset, user_key__isnull=False).values_list(
            "user_key__user", flat=True
        )
    )
    assert holders == {people["owner"].pk}
    # The writer, who may have kept the old key, can no longer use it even with a new grant.
    new_key = unwrap(owner, dataset.mnemonic, private_keys["owner"])
    assert download(owner, dataset.mnemonic, new_key) == (200, DATA)


def crash_then_rerun(job: Job) -> Job:
    """The worker died: the job is failed as beat would fail it, and retried as a user would."""
    fail_lost_job(job, "worker lost")
    return run(retry_job(Job.objects.get(pk=job.pk), job.created_by))


@pytest.mark.parametrize("chunks_done", [0, 2, 6])
def test_a_crash_while_reencrypting_leaves_the_old_key_working_and_a_rerun_continues(
    shared, api, private_keys, chunks_done
):
    dataset, old_key = shared
    owner = api("owner")
    job = Job.objects.get(pk=start(owner, dataset.mnemonic, old_key).json()["id"])
    old, new = job_keys(job)
    assert old == old_key
    counts = rekey.reencrypt_chunks(dataset, old, new, stop_after=chunks_done)  # then the kill
    assert counts == {"reencrypted": chunks_done, "reused": 0}
    assert Chunk.objects.filter(dataset=dataset, generation=2).count() == chunks_done
    dataset.refresh_from_db()
    assert dataset.generation == 1
    assert download(owner, dataset.mnemonic, old_key) == (200, DATA)
    assert download(owner, dataset.mnemonic, new)[0] == 403

    second = crash_then_rerun(job)
    assert second.state == JobState.SUCCEEDED, (second.error, second.traceback)
    assert second.retry_of_id == job.pk and second.result["reused"] == chunks_done
    assert second.result["reencrypted"] == 6 - chunks_done
    assert download(owner, dataset.mnemonic, new) == (200, DATA)
    assert download(owner, dataset.mnemonic, old_key)[0] == 403
    assert unwrap(owner, dataset.mnemonic, private_keys["owner"]) == new


def test_a_crash_inside_the_switch_changes_nothing(shared, api):
    dataset, old_key = shared
    owner = api("owner")
    job = Job.objects.get(pk=start(owner, dataset.mnemonic, old_key).json()["id"])
    old, new = job_keys(job)
    rekey.reencrypt_chunks(dataset, old, new)

    class KilledError(Exception):
        pass

    with pytest.raises(KilledError), transaction.atomic():  # the process dies before the commit
        rekey.switch_generation(dataset, new, generation=1)
        raise KilledError
    dataset.refresh_from_db()
    assert dataset.generation == 1 and dataset.key_fingerprint == crypto.key_fingerprint(old_key)
    assert not KeyWrap.objects.filter(dataset=dataset, generation=2).exists()
    assert download(owner, dataset.mnemonic, old_key) == (200, DATA)

    second = crash_then_rerun(job)
    assert second.state == JobState.SUCCEEDED, second.error
    assert second.result["reused"] == 6
    assert download(owner, dataset.mnemonic, new) == (200, DATA)


def test_a_crash_after_the_switch_leaves_the_new_key_working_and_a_rerun_removes_the_old_files(shared, api):
    dataset, old_key = shared
    owner = api("owner")
    job = Job.objects.get(pk=start(owner, dataset.mnemonic, old_key).json()["id"])
    old, new = job_keys(job)
    rekey.reencrypt_chunks(dataset, old, new)
    rekey.switch_generation(dataset, new, generation=1)  # committed; killed before removing files
    assert generation_dir(dataset, 1).exists()
    assert download(owner, dataset.mnemonic, new) == (200, DATA)
    assert download(owner, dataset.mnemonic, old_key)[0] == 403

    second = crash_then_rerun(job)
    assert second.state == JobState.SUCCEEDED, second.error
    assert second.result["removed_generations"] == [1] and "already" in second.result["summary"]
    assert not generation_dir(dataset, 1).exists()
    assert download(owner, dataset.mnemonic, new) == (200, DATA)


@pytest.fixture
def sent_tasks():
    """(task name, headers, body) of every task message this test publishes to the broker."""
    from celery.signals import before_task_publish

    sent = []

    def keep(sender=None, headers=None, body=None, **_):
        sent.append((sender, headers, body))

    before_task_publish.connect(keep, weak=False)
    yield sent
    before_task_publish.disconnect(keep)


def test_with_a_grace_period_the_old_files_go_later_by_a_task_of_their_own(shared, api, settings, sent_tasks):
    from storage.tasks import remove_old_generations

    settings.STORAGE_REKEY_GRACE_SECONDS = 60
    dataset, old_key = shared
    owner = api("owner")
    first = run(Job.objects.get(pk=start(owner, dataset.mnemonic, old_key).json()["id"]))
    # The job ends at the switch; its worker does not wait out the grace period.
    assert first.state == JobState.SUCCEEDED, first.error
    assert first.result["old_files_removed_in_seconds"] == 60 and first.result["removed_generations"] == []
    assert "the old files go in 60 s" in first.result["summary"]
    assert generation_dir(dataset, 1).exists()  # downloads begun before the switch still read them
    removals = [(headers, body) for name, headers, body in sent_tasks if name == rekey.OLD_FILES_TASK]
    assert len(removals) == 1
    headers, body = removals[0]
    assert headers["eta"] and body[0] == [dataset.pk, 2]
    assert all(key_form not in str(sent_tasks) for key_form in encodings(old_key))

    # A second re-key before the first removal ran: that removal spares generation 2, which
    # the second re-key's own removal takes once its grace period is over.
    _, new_key = job_keys(first)
    second = run(Job.objects.get(pk=start(owner, dataset.mnemonic, new_key).json()["id"]))
    assert second.state == JobState.SUCCEEDED and second.result["generation"] == 3, second.error
    assert [body[0] for name, _, body in sent_tasks if name == rekey.OLD_FILES_TASK][1] == [dataset.pk, 3]
    assert remove_old_generations.apply(args=[dataset.pk, 2]).get() == [1]
    assert not generation_dir(dataset, 1).exists() and generation_dir(dataset, 2).exists()
    assert remove_old_generations.apply(args=[dataset.pk, 3]).get() == [2]
    assert not generation_dir(dataset, 2).exists() and generation_dir(dataset, 3).exists()
    _, newest = job_keys(second)
    assert download(owner, dataset.mnemonic, newest) == (200, DATA)
    # A dataset gone meanwhile leaves nothing to do.
    assert remove_old_generations.apply(args=[Dataset.objects.order_by("-pk")[0].pk + 1, 2]).get() == []


def test_where_the_removal_cannot_be_scheduled_the_job_waits_and_removes_the_old_files(
    shared, api, settings, monkeypatch
):
    from celery import current_app

    settings.STORAGE_REKEY_GRACE_SECONDS = 0.2
    dataset, old_key = shared

    def broker_away(*args, **kwargs):
        raise ConnectionError("the broker is away")

    monkeypatch.setattr(current_app, "send_task", broker_away)
    job = run(Job.objects.get(pk=start(api("owner"), dataset.mnemonic, old_key).json()["id"]))
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["removed_generations"] == [1] and "old_files_removed_in_seconds" not in job.result
    assert not generation_dir(dataset, 1).exists()


def test_a_new_rekey_after_an_abandoned_one_starts_cleanly(shared, api, private_keys):
    dataset, old_key = shared
    owner = api("owner")
    first = Job.objects.get(pk=start(owner, dataset.mnemonic, old_key).json()["id"])
    rekey.reencrypt_chunks(dataset, *job_keys(first), stop_after=4)
    fail_lost_job(first, "worker lost")
    # Instead of retrying, the owner starts again: another new key, so nothing written before is kept.
    second = run(Job.objects.get(pk=start(owner, dataset.mnemonic, old_key).json()["id"]))
    assert second.state == JobState.SUCCEEDED, second.error
    assert second.result["reused"] == 0 and second.result["reencrypted"] == 6
    new_key = unwrap(owner, dataset.mnemonic, private_keys["owner"])
    assert new_key == job_keys(second)[1] != job_keys(first)[1]
    assert download(owner, dataset.mnemonic, new_key) == (200, DATA)
    # A retry of the abandoned job finds the dataset re-keyed by another job and stops.
    third = run(retry_job(Job.objects.get(pk=first.pk), first.created_by))
    assert third.state == JobState.FAILED and "re-keyed by another job" in third.error
    assert download(owner, dataset.mnemonic, new_key) == (200, DATA)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:10] + bytes([data[10] ^ 1]) + data[11:],  # a flipped bit
        lambda data: data + b"\0",  # longer than recorded (chunks are read into kept buffers)
        lambda data: data[:-1],  # shorter
    ],
    ids=["flipped", "longer", "shorter"],
)
def test_a_damaged_chunk_stops_the_rekey_and_the_dataset_keeps_its_key(shared, api, damage):
    dataset, old_key = shared
    path = chunk_path(dataset, 3)
    path.write_bytes(damage(path.read_bytes()))
    job = run(Job.objects.get(pk=start(api("owner"), dataset.mnemonic, old_key).json()["id"]))
    assert job.state == JobState.FAILED and "Chunk 3" in job.error and "unchanged" in job.error
    dataset.refresh_from_db()
    assert dataset.generation == 1
    failed = AuditEvent.objects.get(action="storage.rekey_failed")
    assert failed.object_id == str(dataset.pk) and "Chunk 3" in failed.details["error"]


def test_a_retry_by_someone_who_lost_write_access_does_not_run(shared, api, people):
    dataset, old_key = shared
    job = Job.objects.get(pk=start(api("writer"), dataset.mnemonic, old_key).json()["id"])
    fail_lost_job(job, "worker lost")
    assert (
        api("owner").delete(f"/api/v1/datasets/{dataset.mnemonic}/grants/{people['writer'].pk}/").status_code
        == 204
    )
    again = run(retry_job(Job.objects.get(pk=job.pk), people["writer"]))
    assert again.state == JobState.FAILED and "write grant" in again.error
    dataset.refresh_from_db()
    assert dataset.generation == 1


def test_expired_sealed_keys_fail_the_job_with_a_clear_message(shared, api):
    dataset, old_key = shared
    job = Job.objects.get(pk=start(api("owner"), dataset.mnemonic, old_key).json()["id"])
    _, new_key = job_keys(job)
    # The same keys, sealed as they would have been two days ago with a one-day lifetime.
    two_days_ago = time.time() - 2 * 24 * 3600
    for name, key, which in (("sealed_old_key", old_key, "old"), ("sealed_new_key", new_key, "new")):
        job.params[name] = crypto.seal(
            crypto.sealing_secret(),
            key,
            purpose=f"rekey-{which}:{dataset.mnemonic}:g1",
            ttl_seconds=24 * 3600,
            now=two_days_ago,
        )
    job.save(update_fields=["params"])
    job = run(job)
    assert job.state == JobState.FAILED and "expired" in job.error
    assert Dataset.objects.get(pk=dataset.pk).generation == 1


def test_a_second_worker_waits_its_turn_and_a_dead_workers_lock_is_gone_with_it(shared, api):
    dataset, old_key = shared
    job = Job.objects.get(pk=start(api("owner"), dataset.mnemonic, old_key).json()["id"])
    other = connections.create_connection("default")  # another worker, busy re-keying it
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", [f"storage.rekey:{dataset.pk}"])
        blocked = run(job)
        assert blocked.state == JobState.FAILED and "Another re-key" in blocked.error
    finally:
        other.close()  # that worker died: its connection, and the lock, are gone
    again = run(retry_job(Job.objects.get(pk=job.pk), job.created_by))
    assert again.state == JobState.SUCCEEDED, again.error


def test_one_rekey_at_a_time(shared, api):
    dataset, old_key = shared
    owner = api("owner")
    assert start(owner, dataset.mnemonic, old_key).status_code == 202
    again = start(api("writer"), dataset.mnemonic, old_key)
    assert again.status_code == 409 and "already queued" in again.json()["detail"]
    assert Job.objects.filter(kind="storage.rekey").count() == 1


# --- permissions and bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "role,expected",
    [("anonymous", 401), ("stranger", 404), ("reader", 403), ("writer", 202), ("owner", 202), ("admin", 403)],
)
def test_who_may_rekey(shared, api, role, expected):
    dataset, key = shared
    response = start(api(role), dataset.mnemonic, key)
    assert response.status_code == expected, response.content
    assert Job.objects.filter(kind="storage.rekey").count() == (1 if expected == 202 else 0)
    if expected == 202:
        assert Job.objects.get().created_by.username == role


def test_a_wrong_key_is_refused_audited_and_starts_nothing(shared, api):
    dataset, _ = shared
    response = start(api("owner"), dataset.mnemonic, crypto.new_data_key())
    assert response.status_code == 403 and response.json()["code"] == "wrong_key"
    assert not Job.objects.exists()
    assert AuditEvent.objects.filter(action="storage.rekey_refused", object_id=str(dataset.pk)).exists()


@pytest.mark.parametrize(
    "body,code",
    [
        ({}, 400),
        ({"key": ""}, 400),
        ({"key": "not base64!"}, 400),
        ({"key": base64.b64encode(b"short").decode()}, 400),
        ({"key": "ab" * 32, "colour": "red"}, 400),
        ({"key": "ab" * 32, "rate_limit_mb_s": -1}, 400),
        ({"key": 12}, 400),
    ],
)
def test_bad_rekey_requests_are_4xx(shared, api, body, code):
    dataset, _ = shared
    response = api("owner").post(f"/api/v1/datasets/{dataset.mnemonic}/rekey/", body, format="json")
    assert response.status_code == code, response.content
    assert not Job.objects.exists()


def test_only_available_datasets_are_rekeyed(shared, api):
    dataset, key = shared
    owner = api("owner")
    assert owner.delete(f"/api/v1/datasets/{dataset.mnemonic}/").status_code == 204
    assert start(owner, dataset.mnemonic, key).status_code == 409
    assert (
        api("owner")
        .post("/api/v1/datasets/no_such_thing/rekey/", {"key": key.hex()}, format="json")
        .status_code
        == 404
    )


# --- the operator's command ---------------------------------------------------------------------


def pem_file(tmp_path: Path, private_key) -> str:
    path = tmp_path / "key.pem"
    path.write_text(crypto.private_key_pem(private_key))
    return str(path)


def test_an_operator_rekeys_with_a_root_key_after_the_owner_lost_theirs(
    shared, api, people, private_keys, tmp_path
):
    dataset, old_key = shared
    lost = UserKey.objects.get(user=people["owner"])
    assert api("owner").post(f"/api/v1/keys/{lost.pk}/revoke/").status_code == 200
    replacement = crypto.generate_private_key()
    UserKey.objects.create(
        user=people["owner"],
        name="new laptop",
        public_key=crypto.public_key_pem(replacement.public_key()),
        fingerprint=crypto.public_key_fingerprint(replacement.public_key()),
        state=KeyState.ACTIVE,
    )
    out = io.StringIO()
    call_command(
        "rekey_dataset", dataset.mnemonic, "--root-key", pem_file(tmp_path, private_keys["root"]), stdout=out
    )
    job = Job.objects.get(kind="storage.rekey")
    assert f"job {job.pk}" in out.getvalue() and job.created_by is None
    job = run(job)
    assert job.state == JobState.SUCCEEDED, job.error
    # The owner's new key opens the data again; the lost one has no wrap.
    new_key = unwrap(api("owner"), dataset.mnemonic, replacement)
    assert download(api("owner"), dataset.mnemonic, new_key) == (200, DATA)
    assert not lost.wraps.exists()
    event = AuditEvent.objects.get(action="storage.rekeyed")
    assert event.actor is None and event.actor_repr == "operator with root key operators"
    assert (
        AuditEvent.objects.get(action="storage.rekey_started").actor_repr
        == "operator with root key operators"
    )


def test_the_command_refuses_a_key_that_is_not_a_root_key(shared, private_keys, tmp_path):
    dataset, _ = shared
    with pytest.raises(CommandError, match="not a registered root key"):
        call_command(
            "rekey_dataset", dataset.mnemonic, "--root-key", pem_file(tmp_path, private_keys["owner"])
        )
    with pytest.raises(CommandError, match="No dataset"):
        call_command("rekey_dataset", "no_such_thing", "--root-key", pem_file(tmp_path, private_keys["root"]))
    assert not Job.objects.exists()


def test_purging_is_scheduled_daily():
    entry = settings.CELERY_BEAT_SCHEDULE["purge-expired-datasets"]
    assert entry["task"] == "storage.purge_expired_datasets" and entry["schedule"] == 24 * 3600


def test_the_jobs_api_does_not_show_sealed_keys(shared, api):
    dataset, key = shared
    started = start(api("owner"), dataset.mnemonic, key)
    assert started.status_code == 202
    job = Job.objects.get(pk=started.json()["id"])
    assert job.params["sealed_old_key"].startswith("s1.")
    shown = api("owner").get(f"/api/v1/jobs/{job.pk}/").json()["params"]
    assert shown["sealed_old_key"] == shown["sealed_new_key"] == "(sealed)"
    assert shown["dataset"] == job.params["dataset"]
    listed = api("owner").get("/api/v1/jobs/").json()["results"]
    assert all(j["params"].get("sealed_new_key") in (None, "(sealed)") for j in listed)
