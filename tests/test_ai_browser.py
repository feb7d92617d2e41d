"""The AI pages in headless Chromium: a model uploaded through the models page, applied to a slide
from its page (the worker classifies it), and its diagnosis map over the slide in the viewer –
shown and hidden, its opacity, the legend, the class probabilities under the pointer."""

from __future__ import annotations

import pytest
import torch

from pathology.ai import networks
from pathology.models import Inference, ModelVersion
from tests.helpers import sign_in
from tests.test_slide_browser import PASSWORD, slide  # noqa: F401 - the fixture: a converted slide

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]


def upload(page, base: str, model_file, classes: str) -> None:
    """Fill in and send the models page's upload form."""
    page.goto(f"{base}/models/")
    page.locator("#upload-file").set_input_files(str(model_file))
    page.get_by_label("Model name").last.fill("textures")
    page.get_by_label("Classes, in output order").fill(classes)
    page.locator("#upload-microns").fill("64")
    page.locator("#upload-input").fill("32")
    page.get_by_role("button", name="Check and add").click()


def on_screen(page, x: float, y: float) -> tuple[float, float]:
    """Where slide pixel (x, y) is on the page."""
    return page.evaluate(
        """([x, y]) => {
          const viewer = window.portalViewer.viewer;
          const p = viewer.world.getItemAt(0).imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
          const box = viewer.element.getBoundingClientRect();
          return [box.left + p.x, box.top + p.y];
        }""",
        [x, y],
    )


def test_a_model_uploaded_and_applied_in_the_browser_draws_its_map(
    page,
    asgi_server,
    celery_worker_process,
    slide,  # noqa: F811 - the fixture
    tmp_path,
):
    torch.manual_seed(0)
    model_file = tmp_path / "textures.pt"
    networks.scripted(networks.build("patchnet", 3)).save(str(model_file))
    base = asgi_server.url
    sign_in(page, base, "wim", PASSWORD)

    # Upload on the models page: checked, then its own page.
    upload(page, base, model_file, "tumour, stroma, other")
    page.wait_for_url("**/models/*/", timeout=30_000)
    version = ModelVersion.objects.get(name="textures")
    assert page.url.endswith(f"/models/{version.pk}/")
    assert version.classes == ["tumour", "stroma", "other"] and version.input_size == 32

    # A wrong description is refused with the reason, nothing added.
    upload(page, base, model_file, "tumour, stroma")
    page.wait_for_selector("#upload-status.error")
    assert "3 scores per patch" in page.locator("#upload-status").text_content()
    assert ModelVersion.objects.count() == 1

    # Training needs labelled slides: the form says what is missing (from scratch, and from the
    # uploaded model, whose sizes it then takes).
    page.goto(f"{base}/models/")
    page.locator("#train-name").fill("from-here")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_selector("#train-status.error")
    assert "at least two different values of “diagnosis”" in page.locator("#train-status").text_content()
    page.locator("#train-base").select_option(str(version.pk))
    assert page.locator("#train-input").is_disabled() and page.locator("#train-freeze").is_visible()
    page.evaluate("document.getElementById('train-status').textContent = ''")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_function("document.getElementById('train-status').textContent.includes('two different')")

    # Applied to the slide: the worker classifies it, the page follows and lists it done.
    page.goto(f"{base}/models/{version.pk}/")
    page.get_by_role("button", name="Select all").click()
    page.get_by_role("button", name="Classify the selected slides").click()
    page.wait_for_selector('#inference-table tr[data-state="done"]', timeout=120_000)
    inference = Inference.objects.get(slide=slide)
    assert inference.state == "done" and inference.device in ("cpu", "cuda") and inference.tissue_patches > 10

    # The map over the slide in the viewer.
    page.locator("#inference-table a", has_text="lung").click()
    page.wait_for_function(f"document.body.dataset.mapShown === '{inference.pk}'", timeout=30_000)
    page.wait_for_function("window.portalViewer.map.tilesLoaded > 0", timeout=30_000)
    legend = page.locator("#ai-legend li")
    assert legend.count() == 3 and "tumour" in legend.first.text_content()
    assert page.evaluate("window.portalViewer.viewer.world.getItemCount()") == 2

    # Under the pointer, over the large tissue region: the patch's probabilities, adding up to 100 %.
    point = on_screen(page, 1200, 1000)
    page.mouse.move(point[0], point[1])
    page.mouse.move(point[0] + 2, point[1] + 1)
    page.wait_for_selector("#ai-probabilities li[data-class]")
    rows = page.locator("#ai-probabilities li[data-class]")
    assert rows.count() == 3
    total = sum(int(rows.nth(i).locator(".probability").text_content().split()[0]) for i in range(3))
    assert 98 <= total <= 102
    # Over glass, outside the tissue: said so.
    corner = on_screen(page, 60, 60)
    page.mouse.move(corner[0], corner[1])
    page.wait_for_function("document.getElementById('ai-probabilities').textContent.includes('No tissue')")

    # Opacity and the toggle.
    page.locator("#ai-opacity").fill("30")
    assert page.evaluate("window.portalViewer.map.layer.getOpacity()") == pytest.approx(0.3)
    assert page.locator("#ai-opacity-value").text_content() == "30 %"
    page.get_by_label("Show the map over the slide").uncheck()
    page.wait_for_function("window.portalViewer.viewer.world.getItemCount() === 1")
    page.get_by_label("Show the map over the slide").check()
    page.wait_for_function("window.portalViewer.viewer.world.getItemCount() === 2")
    page.wait_for_function("window.portalViewer.map.layer?.getOpacity() < 0.31")
    page.screenshot(path=str(asgi_server.log_path.parent / "ai-map.png"))
