"""Re-keying end to end: API (uvicorn) → Redis → a real Celery worker on the `crypto` queue that is
SIGKILLed mid-way; the dataset stays downloadable, a second run finishes, the old key is dead, and
the key never shows in the broker's message, the job rows or any process's log."""

from __future__ import annotations

import base64
import json
import os
import signal
import time

import pytest
import redis
import requests

from conftest import start_asgi_server, start_worker
from portal.embedded import EmbeddedRedis, load_config
from portal.models import AuditEvent, Job, JobState
from portal.services.jobs import fail_orphaned_jobs
from storage import crypto
from storage.models import Chunk, Dataset
from storage.services.chunkstore import chunk_path, generation_dir
from storage.tests import conftest as storage_fixtures
from storage.tests.helpers import CHUNK, unwrap, upload
from tests.helpers import bearer, job_socket, receive_updates

# The storage tests' fixtures: people with keys, a root key, API clients.
api, keyed, people, private_keys = (
    storage_fixtures.api,
    storage_fixtures.keyed,
    storage_fixtures.people,
    storage_fixtures.private_keys,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

DATA = os.urandom(64 * CHUNK)  # 4 MiB in 64 chunks: at 1 MiB/s the kill lands mid-way


@pytest.fixture
def rekey_grace() -> str:
    """`PORTAL_STORAGE_REKEY_GRACE_SECONDS` of the stack (a test parametrizes it)."""
    return "0"


@pytest.fixture
def stack(
    rekey_grace,
    keyed,
    service_env,
    service_logs,
    tmp_path,
    settings,
):
    """A Redis of this test's own, a web server on it, and `worker(name)` to start workers on it."""
    from django.conf import settings as django_settings

    redis_server = EmbeddedRedis(load_config(tmp_path / "own-redis"))
    redis_server.start()
    env = {
        **service_env,
        "REDIS_URL": redis_server.config.redis_url,
        "PORTAL_DATA_DIR": str(django_settings.PORTAL_DATA_DIR),  # the test's own, as `keyed` set it
        "PORTAL_STORAGE_REKEY_GRACE_SECONDS": rekey_grace,
    }
    settings.REDIS_URL = redis_server.config.redis_url  # for fail_orphaned_jobs, as beat runs it
    suffix = str(time.monotonic_ns())
    web, base = start_asgi_server(env, service_logs, name=f"rekey-web-{suffix}")
    processes = [web]

    def worker(name: str):
        processes.append(start_worker(env, service_logs, name=f"{name}-{suffix}", queues="crypto"))
        return processes[-1]

    yield base, redis_server.config.redis_url, worker, processes
    for process in processes:
        process.stop()
    redis_server.stop()


def token_for(user) -> str:
    import datetime as dt

    from django.utils import timezone

    from portal.services.tokens import create_api_token

    _, secret = create_api_token(
        user, name="e2e", scopes=["read", "write"], expires_at=timezone.now() + dt.timedelta(days=1)
    )
    return secret


def download(base: str, secret: str, mnemonic: str, key: bytes) -> requests.Response:
    return requests.get(
        f"{base}/api/v1/datasets/{mnemonic}/content/",
        headers={**bearer(secret), "X-Dataset-Key": base64.b64encode(key).decode()},
        timeout=30,
    )


def forms(key: bytes) -> list[str]:
    return [key.hex(), base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode().rstrip("=")]


def test_a_worker_killed_mid_rekey_leaves_the_dataset_readable_and_a_second_run_finishes(
    stack,
    api,
    people,
    private_keys,
):
    base, redis_url, start_crypto_worker, processes = stack
    secret = token_for(people["owner"])
    mnemonic = upload(api("owner"), DATA)
    dataset = Dataset.objects.get(mnemonic=mnemonic)
    old_key = unwrap(api("owner"), mnemonic, private_keys["owner"])

    response = requests.post(
        f"{base}/api/v1/datasets/{mnemonic}/rekey/",
        headers=bearer(secret),
        json={"key": old_key.hex(), "rate_limit_mb_s": 1},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    job = Job.objects.get(pk=response.json()["id"])

    # The message waiting on the `crypto` queue carries the job id only, and no key in any form.
    client = redis.Redis.from_url(redis_url)
    messages = client.lrange("crypto", 0, -1)
    assert len(messages) == 1
    message = json.loads(messages[0])
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert args == [job.pk] and kwargs == {}
    for form in forms(old_key):
        assert form.encode() not in messages[0] and form not in json.dumps(message)

    worker = start_crypto_worker("rekey-worker")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.state == JobState.RUNNING and job.progress >= 0.25:
            break
        assert job.state in (JobState.QUEUED, JobState.RUNNING), (job.error, worker.output())
        time.sleep(0.05)
    else:
        raise AssertionError(f"the re-key did not get going: {job.message}\n{worker.output()}")
    os.killpg(worker.proc.pid, signal.SIGKILL)  # the worker and its pool, mid re-key
    worker.proc.wait()

    job.refresh_from_db()
    written = Chunk.objects.filter(dataset=dataset, generation=2).count()
    assert job.state == JobState.RUNNING and 0 < written < 64, (job.state, written)
    dataset.refresh_from_db()
    assert dataset.generation == 1
    # Still downloadable, whole and correct, with the old key.
    first_download = download(base, secret, mnemonic, old_key)
    assert first_download.status_code == 200 and first_download.content == DATA

    # Beat fails the job of the vanished worker once its heartbeat expired; the owner retries it.
    deadline = time.monotonic() + 60
    while job.pk not in fail_orphaned_jobs():
        assert time.monotonic() < deadline, "the lost job was never failed"
        time.sleep(0.5)
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "stopped while it was running" in job.error

    start_crypto_worker("rekey-worker-2")
    with job_socket(base, secret) as socket:
        retried = requests.post(f"{base}/api/v1/jobs/{job.pk}/retry/", headers=bearer(secret), timeout=10)
        assert retried.status_code == 202, retried.text
        second_id = retried.json()["id"]
        updates = receive_updates(socket, second_id, timeout=120)
    assert updates[-1]["state"] == "succeeded", updates[-1]
    assert len([u for u in updates if 0 < u["progress"] < 1]) >= 3  # progress arrived live
    second = Job.objects.get(pk=second_id)
    assert second.result["reused"] >= written - 1 and second.result["generation"] == 2, second.result

    # Afterwards the new key reads the data, the old one is refused and opens no stored chunk.
    dataset.refresh_from_db()
    new_key = unwrap(api("owner"), mnemonic, private_keys["owner"])
    assert dataset.generation == 2 and crypto.key_fingerprint(new_key) == dataset.key_fingerprint
    assert download(base, secret, mnemonic, new_key).content == DATA
    refused = download(base, secret, mnemonic, old_key)
    assert refused.status_code == 403 and refused.json()["code"] == "wrong_key"
    for chunk in Chunk.objects.filter(dataset=dataset):
        with pytest.raises(crypto.ChunkIntegrityError):
            crypto.decrypt_chunk(
                old_key,
                mnemonic,
                chunk.index,
                bytes(chunk.nonce),
                chunk_path(dataset, chunk.index).read_bytes(),
            )
    assert not generation_dir(dataset, 1).exists()
    assert AuditEvent.objects.filter(action="storage.rekeyed", object_id=str(dataset.pk)).count() == 1

    # Neither key is in the job rows, the audit log or any log of the processes involved.
    rows = json.dumps(list(Job.objects.values()), default=str)
    audit = json.dumps(list(AuditEvent.objects.values("details")), default=str)
    logs = [process.log_path.read_text(errors="replace") for process in processes]
    assert "re-keyed dataset" in logs[-1]
    for key in (old_key, new_key):
        for form in forms(key):
            assert form not in rows and form not in audit
            for text in logs:
                assert form not in text


@pytest.mark.parametrize("rekey_grace", ["3"])
def test_after_the_grace_period_a_task_on_the_worker_removes_the_old_files(stack, api, people, private_keys):
    base, _, start_crypto_worker, _ = stack
    secret = token_for(people["owner"])
    mnemonic = upload(api("owner"), DATA[: 4 * CHUNK])
    dataset = Dataset.objects.get(mnemonic=mnemonic)
    old_key = unwrap(api("owner"), mnemonic, private_keys["owner"])
    start_crypto_worker("rekey-grace-worker")
    response = requests.post(
        f"{base}/api/v1/datasets/{mnemonic}/rekey/",
        headers=bearer(secret),
        json={"key": old_key.hex()},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    job = Job.objects.get(pk=response.json()["id"])
    deadline = time.monotonic() + 60
    while job.state != JobState.SUCCEEDED:
        assert job.state in (JobState.QUEUED, JobState.RUNNING) and time.monotonic() < deadline, job.error
        time.sleep(0.1)
        job.refresh_from_db()
    assert job.result["old_files_removed_in_seconds"] == 3 and job.result["removed_generations"] == []
    # The worker runs the removal once the grace period is over; the new key reads on.
    deadline = time.monotonic() + 60
    while generation_dir(dataset, 1).exists():
        assert time.monotonic() < deadline, "the old files were never removed"
        time.sleep(0.2)
    assert generation_dir(dataset, 2).exists()
    new_key = unwrap(api("owner"), mnemonic, private_keys["owner"])
    assert download(base, secret, mnemonic, new_key).content == DATA[: 4 * CHUNK]
