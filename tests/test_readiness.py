"""`/readyz` follows the real services: a Redis and a worker of its own are stopped in turn."""

from __future__ import annotations

import time

import pytest

from conftest import start_worker
from portal.embedded import EmbeddedRedis, load_config

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def wait_until(check, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def test_readyz_reports_not_ready_without_workers_or_redis(
    client, settings, service_env, service_logs, tmp_path
):
    redis_server = EmbeddedRedis(load_config(tmp_path / "own-redis"))
    redis_server.start()
    settings.REDIS_URL = redis_server.config.redis_url
    worker = None
    try:
        body = client.get("/readyz").json()
        assert body["checks"]["workers"]["ok"] is False, "no worker on this Redis yet"
        assert "no worker heartbeat" in body["checks"]["workers"]["error"]

        worker = start_worker({**service_env, "REDIS_URL": settings.REDIS_URL}, service_logs,
                              name="readiness-worker")
        response = client.get("/readyz")
        assert response.status_code == 200, response.json()
        assert response.json()["checks"]["workers"]["queues"] == ["crypto", "default", "gpu", "tiles"]

        worker.stop()
        worker = None
        wait_until(lambda: client.get("/readyz").status_code == 503)
        assert client.get("/readyz").json()["checks"]["workers"]["ok"] is False

        redis_server.stop()
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not ready"
        assert body["checks"]["redis"]["ok"] is False
        assert body["checks"]["database"]["ok"] is True
    finally:
        if worker is not None:
            worker.stop()
        redis_server.stop()


def test_a_worker_that_dies_stops_counting_after_the_heartbeat_age(
    client, settings, service_env, service_logs, tmp_path
):
    redis_server = EmbeddedRedis(load_config(tmp_path / "own-redis"))
    redis_server.start()
    settings.REDIS_URL = redis_server.config.redis_url
    try:
        worker = start_worker({**service_env, "REDIS_URL": settings.REDIS_URL}, service_logs,
                              name="killed-worker")
        assert client.get("/readyz").status_code == 200
        worker.stop(sig=9)  # no clean shutdown: the heartbeat key must expire by itself
        wait_until(lambda: client.get("/readyz").status_code == 503,
                   timeout=settings.PORTAL_WORKER_HEARTBEAT_MAX_AGE + 10)
    finally:
        redis_server.stop()
