"""Run the whole portal on one machine: `python -m portal.devstack run` (via `./dev run`).

Starts the embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL point elsewhere),
migrates, loads demo data, then runs the ASGI web server and a Celery worker for every queue
(with beat inside it).
Prints the URL and demo credentials; Ctrl-C stops every process it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from portal.embedded import DEFAULT_STATE_ROOT, REPO_ROOT, EmbeddedStack
from portal.httpserver import PROTOCOL as HTTP_PROTOCOL

DEMO_USERS = (("admin", "admin-demo-password", "administrator"),
              ("researcher", "researcher-demo-password", "researcher"))


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _stop(processes: list[subprocess.Popen]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in processes:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for(url: str, processes: list[subprocess.Popen], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def run() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.dev")
    state = os.environ.get("PORTAL_STATE_DIR", str(DEFAULT_STATE_ROOT))
    host = os.environ.get("PORTAL_HOST", "127.0.0.1")
    port = os.environ.get("PORTAL_PORT", "8000")
    stack = None
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        print("Starting embedded PostgreSQL and Redis …", flush=True)
        stack = EmbeddedStack(Path(state) / "dev")
        stack.start()
    processes: list[subprocess.Popen] = []
    interrupted = False

    def on_signal(signum, frame):
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        subprocess.run(_python("manage.py", "migrate", "--noinput"), cwd=REPO_ROOT, check=True)
        subprocess.run(_python("manage.py", "load_demo_data"), cwd=REPO_ROOT, check=True)
        processes.append(subprocess.Popen(
            _python("-m", "celery", "-A", "portal", "worker", "-Q", "default,tiles,crypto,gpu",
                    "--concurrency", os.environ.get("PORTAL_WORKER_CONCURRENCY", "2"),
                    "--loglevel", "INFO", "--hostname", "dev-worker@%h",
                    # beat inside the worker (periodic scrub, jobs of lost workers); one process
                    # fewer than production, where beat runs on its own
                    "--beat", "--schedule", str(Path(state) / "celerybeat-schedule")),
            cwd=REPO_ROOT, start_new_session=True,
        ))
        # DICOM from scanners: the receiver on PORTAL_DICOM_PORT (11112), called as PROJECT<id>.
        processes.append(subprocess.Popen(
            _python("manage.py", "dicom_receiver", "--port", os.environ.get("PORTAL_DICOM_PORT", "11112")),
            cwd=REPO_ROOT, start_new_session=True,
        ))
        processes.append(subprocess.Popen(
            _python("-m", "uvicorn", "portal.asgi:application", "--host", host, "--port", port,
                    "--lifespan", "off", "--http", HTTP_PROTOCOL),
            cwd=REPO_ROOT, start_new_session=True,
        ))
        url = f"http://{host}:{port}/"
        if not _wait_for(url + "healthz", processes):
            print("The web server did not come up; see the output above.", file=sys.stderr)
            return 1
        print(
            f"\n  Portal running at {url}\n"
            + "".join(f"  Sign in as {u} / {p}  ({role})\n" for u, p, role in DEMO_USERS)
            + f"  DICOM receiver on port {os.environ.get('PORTAL_DICOM_PORT', '11112')}"
            + " (call it as PROJECT<id>)\n"
            + "  Press Ctrl-C to stop everything.\n",
            flush=True,
        )
        while not interrupted:
            if any(p.poll() is not None for p in processes):
                print("A portal process exited; stopping the rest.", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    except subprocess.CalledProcessError as exc:
        print(f"Setup step failed: {' '.join(exc.cmd[1:])}", file=sys.stderr)
        return 1
    finally:
        print("Stopping …", flush=True)
        _stop(processes)
        if stack is not None:
            stack.stop(only_started_here=True)
        print("Stopped.", flush=True)


def manage(args: list[str]) -> int:
    """Run a manage.py command against the embedded servers, starting them if needed."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.dev")
    stack = None
    if not os.environ.get("DATABASE_URL"):
        state = os.environ.get("PORTAL_STATE_DIR", str(DEFAULT_STATE_ROOT))
        stack = EmbeddedStack(Path(state) / "dev")
        stack.start()
    try:
        return subprocess.run(_python("manage.py", *args), cwd=REPO_ROOT).returncode
    finally:
        if stack is not None:
            stack.stop(only_started_here=True)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "run"
    if command == "run":
        return run()
    if command == "manage":
        return manage(argv[1:])
    print(f"unknown command {command!r}; use 'run' or 'manage'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
