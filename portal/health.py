"""Probes for load balancers and Kubernetes: `/healthz` (alive) and `/readyz` (can serve)."""

from __future__ import annotations

import json
import time

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from portal.celery import HEARTBEAT_PREFIX


@never_cache
@require_GET
def healthz(request) -> JsonResponse:
    """The process is alive and answering; checks nothing else."""
    return JsonResponse({"status": "ok"})


def _check_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return {"ok": False, "error": type(exc).__name__}


def _check_redis_and_workers() -> tuple[dict, dict]:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
        keys = list(client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=100))
        beats = [json.loads(v) for v in client.mget(keys) if v] if keys else []
    except (redis.RedisError, ValueError) as exc:
        return {"ok": False, "error": type(exc).__name__}, {"ok": False, "error": "redis unavailable"}
    finally:
        client.close()
    max_age = settings.PORTAL_WORKER_HEARTBEAT_MAX_AGE
    fresh = [b for b in beats if time.time() - float(b.get("time", 0)) <= max_age]
    queues = sorted({q for b in fresh for q in b.get("queues", [])})
    workers = {"ok": bool(fresh), "count": len(fresh), "queues": queues}
    if not fresh:
        workers["error"] = f"no worker heartbeat in the last {max_age} seconds"
    return {"ok": True}, workers


@never_cache
@require_GET
def readyz(request) -> JsonResponse:
    """Ready when the database and Redis answer and a worker sent a heartbeat recently."""
    redis_check, workers_check = _check_redis_and_workers()
    checks = {"database": _check_database(), "redis": redis_check, "workers": workers_check}
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )
