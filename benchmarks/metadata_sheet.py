"""The sheet's first screen in Debian's Chromium: from navigation to the first rows drawn and live.

`first_screen_ms(base, username, password, project_id, runs, query)` signs in once, then loads
`/projects/<id>/sheet/<query>` `runs` times (`?all=1`: wait for every row before drawing) and
reads, inside the page, the time from navigation start until the grid shows its first rows and
the websocket is open (what a user waits for).
"""

from __future__ import annotations

import shutil
import statistics

READY = (
    "window.portalSheet && window.portalSheet.ready"
    " && document.querySelector('#sheet .tabulator-row') !== null"
    " && document.getElementById('sheet-connection').dataset.state === 'open'"
)


def first_screen_ms(
    base: str, username: str, password: str, project_id: int, runs: int = 5, query: str = ""
) -> dict:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("Debian's chromium is needed for the sheet benchmark")
    samples, rows = [], 0
    # No database calls happen while Playwright's event loop runs in this thread.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/")
        for _ in range(runs):
            page.goto(f"{base}/projects/{project_id}/sheet/{query}", wait_until="commit")
            page.wait_for_function(READY, timeout=60_000, polling=10)
            samples.append(page.evaluate("performance.now()"))
            rows = page.evaluate("window.portalSheet.table.getDataCount()")
        browser.close()
    return {"median_ms": statistics.median(samples), "samples_ms": samples, "rows": rows}
