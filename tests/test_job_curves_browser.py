"""Headless Chromium (Debian's): a job's reported points are plotted on its page and the curves
grow live as new points are recorded (published through Redis and the real websocket)."""

from __future__ import annotations

import pytest

from portal.models import Job, JobState, User
from portal.services.jobs import JobProgress
from tests.helpers import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]

POINTS = "(series) => document.querySelectorAll(`svg [data-series='${series}'] [data-point]`).length"


def open_job(page, base: str, job: Job) -> None:
    page.goto(f"{base}/jobs/{job.pk}/")
    page.wait_for_function("document.documentElement.dataset.jobsSocket === 'open'")


def test_training_curves_are_plotted_and_grow_live(page, asgi_server):
    user = User.objects.create_user("trainer", password="trainer-pw-123")
    job = Job.objects.create(
        kind="portal.scrub",
        created_by=user,
        state=JobState.RUNNING,
        metrics=[
            {"epoch": 1, "loss": 0.69, "accuracy": 0.52, "val_loss": 0.70, "val_accuracy": 0.50},
            {"epoch": 2, "loss": 0.45, "accuracy": 0.78, "val_loss": 0.52, "val_accuracy": 0.71},
        ],
    )
    base = asgi_server.url
    sign_in(page, base, "trainer", "trainer-pw-123")
    open_job(page, base, job)
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    card = page.locator("section[data-job-metrics]")
    assert card.is_visible()
    assert card.get_by_role("heading", level=2).inner_text() == "Training curves"
    figures = card.locator("figure")
    assert figures.locator("figcaption").all_inner_texts() == ["Loss per epoch", "Accuracy per epoch"]
    loss_chart, accuracy_chart = figures.nth(0).locator("svg"), figures.nth(1).locator("svg")
    assert loss_chart.get_attribute("role") == "img"
    assert "Training from 0.6900 to 0.4500" in loss_chart.locator("title").first.text_content()
    loss_text = loss_chart.text_content()
    assert "Epoch" in loss_text and "Loss" in loss_text and "Validation" in loss_text
    accuracy_text = accuracy_chart.text_content()
    assert "Accuracy (%)" in accuracy_text and "100" in accuracy_text  # fixed 0–100 % axis
    for series in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert page.evaluate(POINTS, series) == 2
    # Training and validation lines differ in dash, not only in colour.
    dashes = loss_chart.locator("polyline").evaluate_all(
        "(lines) => lines.map((l) => l.getAttribute('stroke-dasharray'))"
    )
    assert len(set(dashes)) == 2

    JobProgress(job).record(
        {"epoch": 3, "loss": 0.31, "accuracy": 0.88, "val_loss": 0.40, "val_accuracy": 0.83}
    )
    page.wait_for_function(f"({POINTS})('loss') === 3", timeout=10000)
    for series in ("val_loss", "accuracy", "val_accuracy"):
        assert page.evaluate(POINTS, series) == 3

    # The text alternative: every value in a table under a disclosure.
    card.locator("summary").click()
    table = card.locator("[data-metrics-table] table")
    assert table.locator("tbody tr").count() == 3
    assert table.locator("thead th").all_inner_texts() == [
        "Epoch",
        "Loss (training)",
        "Loss (validation)",
        "Accuracy (training)",
        "Accuracy (validation)",
    ]
    assert table.locator("tbody tr").last.inner_text().split("\t") == [
        "3",
        "0.3100",
        "0.4000",
        "88.0 %",
        "83.0 %",
    ]
    assert navigations == [], "the curves must grow without reloading the page"
    page.screenshot(path=str(asgi_server.log_path.parent / "job-curves.png"), full_page=True)


def test_the_curves_card_appears_with_the_first_point(page, asgi_server):
    user = User.objects.create_user("trainer", password="trainer-pw-123")
    job = Job.objects.create(kind="portal.scrub", created_by=user, state=JobState.RUNNING)
    base = asgi_server.url
    sign_in(page, base, "trainer", "trainer-pw-123")
    open_job(page, base, job)
    card = page.locator("section[data-job-metrics]")
    assert not card.is_visible()

    JobProgress(job).record({"epoch": 1, "loss": 0.69, "accuracy": 0.52})
    card.wait_for(state="visible", timeout=10000)
    assert page.evaluate(POINTS, "loss") == 1 and page.evaluate(POINTS, "val_loss") == 0
    assert card.locator("figcaption").all_inner_texts() == ["Loss per epoch", "Accuracy per epoch"]
