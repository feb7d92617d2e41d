"""Test session setup: real PostgreSQL and Redis, real worker and web-server processes.

Unless DATABASE_URL and REDIS_URL are set, the session starts the embedded servers under
`.portal/test` (the test settings read the same state directory) and stops them at the end.
Fixtures here start a real Celery worker and a real ASGI server (uvicorn) as subprocesses on the
test database; tests using them need `transactional_db` so that their data is committed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from portal.embedded import DEFAULT_STATE_ROOT, REPO_ROOT, EmbeddedStack
from portal.httpserver import PROTOCOL as HTTP_PROTOCOL

_stack: EmbeddedStack | None = None


def pytest_configure(config) -> None:
    global _stack
    if os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"):
        return
    state = Path(os.environ.get("PORTAL_STATE_DIR", str(DEFAULT_STATE_ROOT))) / "test"
    _stack = EmbeddedStack(state, durable=False)
    _stack.start()


def pytest_unconfigure(config) -> None:
    if _stack is not None:
        _stack.stop(only_started_here=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def _clean_data_dir(settings):
    """Each test starts with an empty data directory (shared with worker processes)."""
    path = Path(settings.PORTAL_DATA_DIR)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    yield


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """Each test's websockets get a channel layer of their own.

    In-process websocket tests run each scenario in a new event loop; a layer kept from an
    earlier test may hold asyncio locks bound to that test's (closed) loop.
    """
    yield
    from channels.layers import channel_layers

    channel_layers.backends.clear()


@pytest.fixture(scope="session")
def service_env(django_db_setup) -> dict[str, str]:
    """Environment for subprocesses: same settings module, servers and test database."""
    from django.conf import settings

    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "portal.settings.test",
        "DATABASE_URL": settings.DATABASE_URL,
        "REDIS_URL": settings.REDIS_URL,
        "PORTAL_TEST_DATABASE_NAME": settings.DATABASES["default"]["NAME"],
        "PORTAL_DATA_DIR": str(settings.PORTAL_DATA_DIR),
        "PYTHONUNBUFFERED": "1",
    })
    return env


class ManagedProcess:
    """A subprocess whose output goes to a log file shown when a test needs it."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.args = args
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> ManagedProcess:
        log = open(self.log_path, "ab")
        self._log = log
        self.proc = subprocess.Popen(
            self.args, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, sig: int = 15, timeout: float = 20) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:  # leftovers of the process group (e.g. pool children of a killed worker)
            os.killpg(self.proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


def start_worker(env: dict[str, str], log_dir: Path, name: str = "worker",
                 queues: str = "default,tiles,crypto,gpu") -> ManagedProcess:
    """A real Celery worker (prefork, 2 processes); returns once it sends heartbeats."""
    import redis

    hostname = f"{name}-{os.getpid()}-{time.monotonic_ns()}@test"
    worker = ManagedProcess(name, [
        sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", queues, "-c", "2",
        "--hostname", hostname, "--loglevel", "INFO", "--without-mingle", "--without-gossip",
    ], env, log_dir).start()
    client = redis.Redis.from_url(env["REDIS_URL"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if client.exists(f"portal:worker:{hostname}"):
            worker.hostname = hostname
            return worker
        if not worker.alive():
            break
        time.sleep(0.2)
    worker.stop()
    raise RuntimeError(f"Celery worker did not start:\n{worker.output()}")


@pytest.fixture(scope="session")
def service_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="session")
def celery_worker_process(service_env, service_logs):
    worker = start_worker(service_env, service_logs)
    yield worker
    worker.stop()


def start_asgi_server(env: dict[str, str], log_dir: Path, name: str = "web",
                      host: str = "127.0.0.1", port: int | None = None) -> tuple[ManagedProcess, str]:
    port = port or free_port()
    server = ManagedProcess(name, [
        sys.executable, "-m", "uvicorn", "portal.asgi:application", "--host", host,
        "--port", str(port), "--lifespan", "off", "--log-level", "warning", "--http", HTTP_PROTOCOL,
    ], env, log_dir).start()
    base = f"http://{host}:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=1):
                return server, base
        except OSError:
            if not server.alive():
                break
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"ASGI server did not start:\n{server.output()}")


@contextmanager
def uvicorn_in_thread(app, **config) -> Iterator[int]:
    """`app` served by uvicorn with the portal's HTTP protocol in a thread of this process (so a
    test's stand-ins are what it runs); yields the port. `config`: more of `uvicorn.Config`."""
    import threading

    import uvicorn

    options = {"http": HTTP_PROTOCOL, "lifespan": "off", "log_level": "warning", **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (server.started and server.servers):
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def asgi_server(service_env, service_logs):
    """The portal served by uvicorn (HTTP and websockets), as in production."""
    server, base = start_asgi_server(service_env, service_logs)
    server.url = base
    yield server
    server.stop()
