"""The README's run command: from nothing to a running portal with demo data, and Ctrl-C stops all.

Runs `python -m portal.devstack run` (what `./dev run` executes after preparing `.venv/`) on a
state directory of its own, so it starts its own embedded PostgreSQL and Redis as on a fresh clone.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.services


def processes_using(state_dir: Path) -> dict[int, str]:
    """Live processes started for this state directory: by environment, command line or pid file
    (Redis rewrites its command line and environment to show its title)."""
    marker = str(state_dir).encode()
    from_pidfiles = set()
    for pidfile in [*state_dir.rglob("*.pid"), *state_dir.rglob("postmaster.pid")]:
        try:
            from_pidfiles.add(int(pidfile.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if marker in cmdline or marker in environ or int(proc.name) in from_pidfiles:
            found[int(proc.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")[:120]
    return found


def read_until(proc: subprocess.Popen, text: str, timeout: float) -> str:
    output = ""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while text not in output:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise AssertionError(f"'{text}' did not appear; output so far:\n{output[-4000:]}")
        if selector.select(timeout=1):
            chunk = os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
            output += chunk
    return output


def test_run_command_starts_everything_and_ctrl_c_stops_it(tmp_path):
    state = tmp_path / "state"
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "PORTAL_TEST_DATABASE_NAME",
                        "PORTAL_DATA_DIR")}
    dicom_port = free_port()
    env.update({"PORTAL_STATE_DIR": str(state), "PORTAL_PORT": str(port), "PORTAL_WORKER_CONCURRENCY": "1",
                "PYTHONUNBUFFERED": "1", "PORTAL_DICOM_PORT": str(dicom_port)})
    # Its own session, so that a signal to its process group is exactly what Ctrl-C in a terminal does.
    proc = subprocess.Popen([sys.executable, "-m", "portal.devstack", "run"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output = read_until(proc, "Press Ctrl-C to stop everything.", timeout=300)
        base = f"http://127.0.0.1:{port}"
        assert f"Portal running at {base}/" in output
        assert "Sign in as admin / admin-demo-password" in output
        assert "Sign in as researcher / researcher-demo-password" in output

        # The demo logins work and the worker is up.
        deadline = time.monotonic() + 60
        while requests.get(f"{base}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "no worker heartbeat"
            time.sleep(0.5)
        session = requests.Session()
        session.get(f"{base}/accounts/login/", timeout=10)
        signed_in = session.post(f"{base}/accounts/login/", timeout=10, data={
            "username": "admin", "password": "admin-demo-password",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        }, headers={"Referer": f"{base}/accounts/login/"})
        assert signed_in.url == f"{base}/", signed_in.text[-2000:]
        jobs = session.get(f"{base}/api/v1/jobs/", timeout=10)
        assert jobs.status_code == 200
        assert len([p for p in (state / "data").rglob("*") if p.is_file()]) >= 24, "demo data missing"

        assert list(state.glob("celerybeat-schedule*")), "beat is not running"
        # the DICOM receiver answers C-ECHO
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification

        echo = AE(ae_title="DEVTEST")
        echo.add_requested_context(Verification)
        association = echo.associate("127.0.0.1", dicom_port, ae_title="PORTAL")
        assert association.is_established, "the DICOM receiver is not running"
        assert association.send_c_echo().Status == 0
        association.release()
        started = processes_using(state)
        kinds = " ".join(started.values())
        for expected in ("postgres", "redis", "celery", "uvicorn"):
            assert expected in kinds, f"{expected} not running: {started}"

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, rest.decode(errors="replace")[-3000:]
        assert "Stopped." in rest.decode(errors="replace")
        deadline = time.monotonic() + 10
        while processes_using(state) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_using(state) == {}, "processes left running after Ctrl-C"
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{base}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in processes_using(state):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
