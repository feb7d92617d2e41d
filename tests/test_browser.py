"""Headless Chromium (Debian's) drives the real portal: sign in, start the demo job, watch it."""

from __future__ import annotations

import shutil

import pytest

from portal.models import User
from portal.services.datastore import store_bytes
from tests.helpers import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_sign_in_start_demo_job_and_watch_it_finish(page, asgi_server, celery_worker_process):
    User.objects.create_user("boss", password="boss-pw-123", is_staff=True)
    for index in range(16):
        store_bytes(f"demo/{index}.bin", bytes([index]) * 512 * 1024)
    base = asgi_server.url
    sign_in(page, base, "boss", "boss-pw-123")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    page.wait_for_url(f"{base}/jobs/")
    page.wait_for_function("document.documentElement.dataset.jobsSocket === 'open'")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.get_by_role("button", name="Start integrity scrub").click()

    row = page.locator("tr[data-job-id]").first
    row.wait_for()
    page.wait_for_function(
        "() => { const bar = document.querySelector('tr[data-job-id] progress');"
        " return bar && bar.value === 100; }", timeout=30000)
    assert row.locator("[data-field=state]").inner_text() == "Succeeded"
    assert row.locator("[data-field=message]").inner_text() == "16 of 16 files verified; 0 missing, 0 damaged"
    assert row.locator("a").first.inner_text().startswith("Integrity scrub #")
    assert not row.locator("[data-action=cancel]").is_visible()
    assert not row.locator("[data-action=retry]").is_visible()
    assert navigations == [], "the page must update without reloading"
    page.screenshot(path=str(asgi_server.log_path.parent / "jobs-page.png"), full_page=True)


def test_failed_job_shows_its_message_live(page, asgi_server, celery_worker_process, settings):
    User.objects.create_user("boss", password="boss-pw-123", is_staff=True)
    shutil.rmtree(settings.PORTAL_DATA_DIR)
    sign_in(page, asgi_server.url, "boss", "boss-pw-123")
    page.goto(f"{asgi_server.url}/jobs/")
    page.wait_for_function("document.documentElement.dataset.jobsSocket === 'open'")
    page.get_by_role("button", name="Start integrity scrub").click()
    error = page.locator("tr[data-job-id] [data-field=error]").first
    error.wait_for(state="visible", timeout=30000)
    assert "does not exist" in error.inner_text()
    assert page.locator("tr[data-job-id] [data-action=retry]").first.is_visible()


def test_keyboard_only_sign_in(page, asgi_server):
    User.objects.create_user("keys", password="keys-pw-123")
    page.goto(f"{asgi_server.url}/accounts/login/")
    # The username field has focus on arrival (autofocus applies just after load).
    page.wait_for_function("document.activeElement && document.activeElement.id === 'id_username'")
    page.keyboard.type("keys")
    page.keyboard.press("Tab")
    page.keyboard.type("keys-pw-123")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{asgi_server.url}/")
    assert page.get_by_role("heading", level=1).inner_text().startswith("Welcome")
