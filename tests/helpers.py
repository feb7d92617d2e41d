"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import datetime as dt
import json
import time

import requests
from django.utils import timezone
from websockets.sync.client import connect

from portal.models import User
from portal.services.tokens import create_api_token


def user_with_token(username: str, *, staff: bool = False, scopes=("read", "write"),
                    password: str = "pw-for-tests-1") -> tuple[User, str]:
    user = User.objects.create_user(username=username, password=password, is_staff=staff,
                                    email=f"{username}@example.org")
    _, secret = create_api_token(user, name="tests", scopes=list(scopes),
                                 expires_at=timezone.now() + dt.timedelta(days=1))
    return user, secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def job_socket(base_url: str, secret: str | None = None, **kwargs):
    headers = bearer(secret) if secret else {}
    return connect(base_url.replace("http://", "ws://") + "/ws/jobs/",
                   additional_headers=headers, open_timeout=10, **kwargs)


def wait_for_job(base_url: str, secret: str, job_id: int, states, timeout: float = 60,
                 predicate=None) -> dict:
    """Poll the API until the job is in one of `states` (and `predicate(job)` holds)."""
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        job = requests.get(f"{base_url}/api/v1/jobs/{job_id}/", headers=bearer(secret), timeout=10).json()
        if job["state"] in states and (predicate is None or predicate(job)):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach {states} in {timeout}s: {job}")


def receive_updates(socket, job_id: int, timeout: float = 60) -> list[dict]:
    """Collect websocket updates for one job until it finishes."""
    updates: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(socket.recv(timeout=max(deadline - time.monotonic(), 0.1)))
        if message.get("type") == "job" and message["job"]["id"] == job_id:
            updates.append(message["job"])
            if message["job"]["state"] in ("succeeded", "failed", "cancelled"):
                return updates
    raise AssertionError(f"job {job_id} did not finish; updates so far: {updates}")


def sign_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/")
    assert "/accounts/login/" in page.url
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")
