"""Jobs end to end: API → real Celery worker → Redis channel layer → real websocket (uvicorn)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import requests
from django.conf import settings

from portal.services.datastore import store_bytes
from tests.helpers import bearer, job_socket, receive_updates, user_with_token, wait_for_job

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def store_files(count: int, size: int) -> None:
    for index in range(count):
        store_bytes(f"e2e/file-{index:03d}.bin", os.urandom(size))


def test_progress_arrives_in_order_and_a_stranger_hears_nothing(celery_worker_process, asgi_server):
    _, admin_secret = user_with_token("boss", staff=True, scopes=["read", "write", "admin"])
    _, stranger_secret = user_with_token("stranger")
    store_files(12, 512 * 1024)
    base = asgi_server.url
    with job_socket(base, admin_secret) as admin_ws, job_socket(base, stranger_secret) as stranger_ws:
        response = requests.post(
            f"{base}/api/v1/jobs/", headers=bearer(admin_secret), timeout=10,
            json={"kind": "portal.scrub", "params": {"rate_limit_mb_s": 4}},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert response.headers["Location"].endswith(f"/api/v1/jobs/{job_id}/")

        stranger_ws.send(json.dumps({"action": "subscribe", "job": job_id}))
        assert json.loads(stranger_ws.recv(timeout=5))["type"] == "error"

        updates = receive_updates(admin_ws, job_id)

        sequences = [u["sequence"] for u in updates]
        assert sequences == sorted(set(sequences)), "updates out of order or repeated"
        progress = [u["progress"] for u in updates]
        assert progress == sorted(progress)
        states = [u["state"] for u in updates]
        assert states[0] == "running" and states[-1] == "succeeded"
        assert len([u for u in updates if 0 < u["progress"] < 1]) >= 3, updates
        assert updates[-1]["progress"] == 1.0
        assert updates[-1]["message"] == "12 of 12 files verified; 0 missing, 0 damaged"

        with pytest.raises(TimeoutError):
            stranger_ws.recv(timeout=1.5)

    job = requests.get(f"{base}/api/v1/jobs/{job_id}/", headers=bearer(admin_secret), timeout=10).json()
    assert job["result"]["verified"] == 12 and job["result"]["damaged"] == []


def test_scrub_reports_damaged_and_missing_files(celery_worker_process, asgi_server):
    _, secret = user_with_token("boss", staff=True, scopes=["read", "write", "admin"])
    store_files(3, 4096)
    data = settings.PORTAL_DATA_DIR
    with open(data / "e2e/file-001.bin", "r+b") as handle:
        handle.write(b"rot")  # bit rot in place: same size, different content
    (data / "e2e/file-002.bin").unlink()
    response = requests.post(f"{asgi_server.url}/api/v1/jobs/", headers=bearer(secret),
                             json={"kind": "portal.scrub"}, timeout=10)
    job = wait_for_job(asgi_server.url, secret, response.json()["id"], {"succeeded", "failed"})
    assert job["state"] == "succeeded"
    assert job["result"]["missing"] == ["e2e/file-002.bin"]
    assert [d["path"] for d in job["result"]["damaged"]] == ["e2e/file-001.bin"]
    assert job["message"] == "1 of 3 files verified; 1 missing, 1 damaged"


def test_a_failing_job_shows_its_message(celery_worker_process, asgi_server):
    _, secret = user_with_token("boss", staff=True, scopes=["read", "write", "admin"])
    shutil.rmtree(settings.PORTAL_DATA_DIR)
    with job_socket(asgi_server.url, secret) as socket:
        response = requests.post(f"{asgi_server.url}/api/v1/jobs/", headers=bearer(secret),
                                 json={"kind": "portal.scrub"}, timeout=10)
        updates = receive_updates(socket, response.json()["id"])
    assert updates[-1]["state"] == "failed"
    assert "does not exist" in updates[-1]["error"]
    assert str(settings.PORTAL_DATA_DIR) in updates[-1]["error"]


def test_cancel_stops_a_running_job_and_retry_starts_a_new_one(celery_worker_process, asgi_server):
    _, secret = user_with_token("boss", staff=True, scopes=["read", "write", "admin"])
    store_files(10, 1024 * 1024)
    base = asgi_server.url
    response = requests.post(f"{base}/api/v1/jobs/", headers=bearer(secret), timeout=10,
                             json={"kind": "portal.scrub", "params": {"rate_limit_mb_s": 1}})
    job_id = response.json()["id"]
    wait_for_job(base, secret, job_id, {"running"}, predicate=lambda j: j["progress"] > 0)

    cancel = requests.post(f"{base}/api/v1/jobs/{job_id}/cancel/", headers=bearer(secret), timeout=10)
    assert cancel.status_code == 202
    job = wait_for_job(base, secret, job_id, {"cancelled", "succeeded", "failed"}, timeout=10)
    assert job["state"] == "cancelled"
    assert job["progress"] < 1

    again = requests.post(f"{base}/api/v1/jobs/{job_id}/cancel/", headers=bearer(secret), timeout=10)
    assert again.status_code == 409 and again.json()["code"] == "conflict"

    retry = requests.post(f"{base}/api/v1/jobs/{job_id}/retry/", headers=bearer(secret), timeout=10)
    assert retry.status_code == 202
    assert retry.json()["retry_of"] == job_id
    requests.post(f"{base}/api/v1/jobs/{retry.json()['id']}/cancel/", headers=bearer(secret), timeout=10)


def test_gpu_queue_work_goes_only_to_a_gpu_worker(service_env, service_logs, celery_worker_process):
    from portal.services.jobs import JOB_KINDS

    queues = {kind.queue for kind in JOB_KINDS.values()}
    assert queues <= {"default", "tiles", "crypto", "gpu"}
    from portal.celery import app

    bindings = {q.name: (q.exchange.name, q.routing_key) for q in app.conf.task_queues}
    assert bindings["gpu"] == ("gpu", "gpu")
    assert len({b for b in bindings.values()}) == 4, "each queue needs its own route"


def test_unauthenticated_and_foreign_sockets_are_refused(asgi_server):
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    url = asgi_server.url.replace("http://", "ws://") + "/ws/jobs/"
    with connect(url, origin=asgi_server.url, open_timeout=10) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=5)
    assert closed.value.rcvd.code == 4401
    with connect(url, additional_headers=bearer("rdp_not-a-token"), open_timeout=10) as socket:
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=5)
    assert closed.value.rcvd.code == 4401
    with pytest.raises(InvalidStatus):
        connect(url, origin="http://evil.example", open_timeout=10)
