"""The Celery app: queues `default`, `tiles`, `crypto`, `gpu`; JSON only; worker heartbeats.

A worker started with `-Q gpu` consumes only GPU work. Each worker writes a heartbeat key to Redis
every few seconds (`portal:worker:<hostname>`) that `/readyz` reads; the key is removed on a clean
shutdown and expires on its own after a crash.
"""

from __future__ import annotations

import json
import os
import threading
import time

from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.dev")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
QUEUES = ("default", "tiles", "crypto", "gpu")
# One direct exchange per queue, so a message routed to `gpu` reaches only the `gpu` queue.
app.conf.task_queues = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES]
app.conf.task_default_exchange = "default"
app.conf.task_default_routing_key = "default"
app.autodiscover_tasks()

HEARTBEAT_PREFIX = "portal:worker:"
_stop_heartbeat = threading.Event()


def _heartbeat_loop(hostname: str, queues: list[str]) -> None:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    key = HEARTBEAT_PREFIX + hostname
    while not _stop_heartbeat.is_set():
        try:
            client.set(
                key, json.dumps({"time": time.time(), "queues": queues}),
                ex=max(settings.PORTAL_WORKER_HEARTBEAT_MAX_AGE, 1),
            )
        except redis.RedisError:
            pass  # Redis down: /readyz reports that itself; keep trying.
        _stop_heartbeat.wait(settings.PORTAL_WORKER_HEARTBEAT_INTERVAL)
    try:
        client.delete(key)
    except redis.RedisError:
        pass


@worker_ready.connect
def start_heartbeat(sender, **kwargs) -> None:
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    threading.Thread(
        target=_heartbeat_loop, args=(sender.hostname, queues), name="portal-heartbeat",
        daemon=True,
    ).start()


@worker_shutdown.connect
def stop_heartbeat(sender, **kwargs) -> None:
    _stop_heartbeat.set()
    time.sleep(0.1)
