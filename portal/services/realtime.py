"""Push messages to websocket groups from synchronous code (views, services, Celery tasks).

Every app sends its live updates through `publish()`; consumers subscribe sockets to the groups.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)


class _Publisher:
    """Sends channel-layer messages from synchronous code through one long-lived event loop.

    `async_to_sync` would build a new loop, and with it a new Redis connection, for every update
    (tens of milliseconds each); one loop thread per process keeps the connection open.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():  # new process after a fork
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="job-publisher", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def send(self, layer, groups: list[str], message: dict, timeout: float = 5) -> None:
        async def send_all() -> None:
            for group in groups:
                await layer.group_send(group, message)

        asyncio.run_coroutine_threadsafe(send_all(), self._ensure_loop()).result(timeout)


_publisher = _Publisher()


def publish(groups: list[str], message: dict) -> bool:
    """Send `message` to every group in `groups`; False (and a warning) if that failed.

    A dead Redis must never fail the work that produced the update, so errors are logged, not raised.
    """
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        _publisher.send(layer, groups, message)
    except Exception:
        logger.warning("could not publish %s to %s", message.get("type"), groups, exc_info=True)
        return False
    return True
