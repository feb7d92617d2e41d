"""Liveness probe for a Celery worker: exit 0 when its heartbeat is fresh, 1 otherwise.

Used by the Kubernetes manifests (`deploy/k8s/`) as an exec probe in worker pods: a worker that
hangs or lost Redis stops sending heartbeats, and the pod is restarted.
"""

from __future__ import annotations

import json
import socket
import time

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from portal.celery import HEARTBEAT_PREFIX


class Command(BaseCommand):
    help = "Check that a Celery worker on this host sent a heartbeat recently (exit 1 if not)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--host", default=socket.gethostname(),
            help="Host part of the worker name (`name@host`); default: this machine's host name.",
        )
        parser.add_argument(
            "--max-age", type=float, default=None,
            help="Oldest acceptable heartbeat in seconds (default PORTAL_WORKER_HEARTBEAT_MAX_AGE).",
        )

    def handle(self, *args, host: str, max_age: float | None, **options):
        max_age = max_age if max_age is not None else settings.PORTAL_WORKER_HEARTBEAT_MAX_AGE
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=3, socket_connect_timeout=3)
        try:
            keys = list(client.scan_iter(match=f"{HEARTBEAT_PREFIX}*@{host}", count=100))
            beats = {k.decode(): json.loads(v) for k, v in zip(keys, client.mget(keys), strict=True) if v} \
                if keys else {}
        except (redis.RedisError, ValueError) as exc:
            raise CommandError(f"cannot read worker heartbeats from Redis: {exc}") from exc
        finally:
            client.close()
        fresh = {k: b for k, b in beats.items() if time.time() - float(b.get("time", 0)) <= max_age}
        if not fresh:
            raise CommandError(f"no heartbeat from a worker on {host} in the last {max_age:g} seconds")
        for key, beat in sorted(fresh.items()):
            name = key.removeprefix(HEARTBEAT_PREFIX)
            self.stdout.write(f"{name}: alive, queues {', '.join(beat.get('queues', []))}")
