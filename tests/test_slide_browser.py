"""The slide viewer in headless Chromium: tiles load at several zoom levels, the scale bar and
magnification follow the zoom, and annotations round-trip through GeoJSON (drawn, exported,
imported)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metadata.services.projects import create_project, set_member
from pathology.models import Annotation, Slide
from pathology.services import slides as slide_service
from pathology.synthetic import Blob, write_slide
from portal.models import User
from tests.helpers import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]

PASSWORD = "slide-pw-123"


@pytest.fixture
def slide(tmp_path):
    owner = User.objects.create_user("olga", password=PASSWORD)
    writer = User.objects.create_user("wim", password=PASSWORD)
    project = create_project(name="Lung slides", description="", owner=owner)
    set_member(project, writer, "writer", actor=owner)
    source = write_slide(
        tmp_path / "lung.svs",
        3000,
        2200,
        [Blob(1200, 1000, 900, 700), Blob(2400, 1600, 400, 400, 1)],
        mpp=0.25,
        layout="aperio",
    )
    slide = slide_service.add_slide(
        project=project, user=writer, source=source, file_name="lung.svs", start=False
    )
    slide_service._convert(slide, lambda *args: None)  # as the worker would, here
    slide.refresh_from_db()
    return slide


def test_viewer_loads_tiles_at_several_levels_and_annotations_round_trip(page, asgi_server, slide, tmp_path):
    base = asgi_server.url
    sign_in(page, base, "wim", PASSWORD)
    page.goto(f"{base}/slides/{slide.pk}/")
    page.wait_for_function("document.body.dataset.ready === 'yes'", timeout=30_000)
    page.wait_for_function("window.portalViewer.loadedLevels.size >= 1", timeout=30_000)
    first = page.evaluate("Math.max(...window.portalViewer.loadedLevels)")
    top = 12  # Deep Zoom's full resolution: 2^12 ≥ 3000 pixels
    assert first < top
    scale_before = page.locator(".scale-bar span").text_content()
    magnification_before = page.locator("#viewer-magnification").text_content()
    # Zoom in with the keyboard, then all the way: deeper levels load, scale bar and
    # magnification follow.
    page.locator("#viewer").click()
    zoom = page.evaluate("window.portalViewer.viewer.viewport.getZoom()")
    for _ in range(4):
        page.keyboard.press("+")
        page.wait_for_timeout(300)
    page.wait_for_function(f"window.portalViewer.viewer.viewport.getZoom() > {zoom} * 1.2")
    page.evaluate(
        "window.portalViewer.viewer.viewport.zoomTo(window.portalViewer.viewer.viewport.getMaxZoom())"
    )
    page.wait_for_function(f"window.portalViewer.loadedLevels.has({top})", timeout=30_000)
    assert len(page.evaluate("[...window.portalViewer.loadedLevels]")) >= 3
    assert page.locator(".scale-bar span").text_content() != scale_before
    assert "µm" in page.locator(".scale-bar span").text_content()
    assert page.locator("#viewer-magnification").text_content() != magnification_before
    page.evaluate("window.portalViewer.viewer.viewport.goHome(true)")

    # Draw a rectangle with the mouse, labelled.
    page.get_by_role("button", name="Rectangle").click()
    page.get_by_label("Label").fill("tumour")
    box = page.locator("#viewer").bounding_box()
    x, y = box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.35
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 80, y + 60, steps=8)
    page.mouse.up()
    page.wait_for_selector("#annotation-list li[data-annotation]", timeout=10_000)
    stored = Annotation.objects.get(slide=slide)
    assert stored.kind == "rectangle" and stored.label == "tumour"
    ring = stored.geometry["coordinates"][0]
    assert len(ring) == 5 and ring[0] == ring[-1] and 0 < ring[0][0] < 3000

    # A point, then export: the file holds both, as stored.
    page.get_by_role("button", name="Point").click()
    page.get_by_label("Label").fill("mitosis")
    page.mouse.click(x + 150, y + 20)
    page.wait_for_function("document.querySelectorAll('#annotation-list li[data-annotation]').length === 2")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export GeoJSON").click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["type"] == "FeatureCollection"
    assert [(f["properties"]["label"], f["properties"]["kind"]) for f in exported["features"]] == [
        ("tumour", "rectangle"),
        ("mitosis", "point"),
    ]
    assert exported["features"][0]["geometry"] == stored.geometry

    # Import it again (as another tool would give it back): the same shapes arrive once more.
    (tmp_path / "back.geojson").write_text(json.dumps(exported))
    page.locator("#annotations-import").set_input_files(str(tmp_path / "back.geojson"))
    page.wait_for_function("document.querySelectorAll('#annotation-list li[data-annotation]').length === 4")
    assert "2 annotations imported" in page.locator("#annotation-status").text_content()
    geometries = [a.geometry for a in Annotation.objects.filter(slide=slide).order_by("id")]
    assert geometries[2:] == geometries[:2]
    # A broken file says why and adds nothing.
    (tmp_path / "broken.geojson").write_text('{"type": "Feature", "geometry": {"type": "Circle"}}')
    page.locator("#annotations-import").set_input_files(str(tmp_path / "broken.geojson"))
    page.wait_for_function(
        "document.querySelector('#annotation-status').textContent.includes('Not imported')"
    )
    assert "Circle" in page.locator("#annotation-status").text_content()
    assert Annotation.objects.filter(slide=slide).count() == 4
    # Shapes are drawn over the slide.
    assert page.locator(".annotation-layer .annotation").count() == 4
    page.screenshot(path=str(asgi_server.log_path.parent / "slide-viewer.png"))
    assert Slide.objects.get(pk=slide.pk).state == "ready"


def test_adding_slides_in_the_browser_resumes_and_follows_the_conversion(
    page, asgi_server, celery_worker_process, tmp_path
):
    """Files dropped on the add page go in chunks (an interrupted upload of the same file goes on
    where it stopped); the worker converts them and the page shows it live: ready with a link to
    the viewer, or failed with the reason."""
    import hashlib

    from storage.models import UploadSession
    from storage.services import sessions

    owner = User.objects.create_user("olga", password=PASSWORD)
    project = create_project(name="Biopsies", description="", owner=owner)
    source = write_slide(tmp_path / "biopsy.svs", 2000, 1500, [Blob(900, 700, 600, 500)], layout="aperio")
    data = source.read_bytes()
    # An upload of this file that stopped after two of its pieces.
    earlier = sessions.start_session(
        owner=owner, file_name="biopsy.svs", size=len(data), purpose="slide", chunk_size=256 * 1024
    )
    for index in (0, 1):
        piece = data[index * 256 * 1024 : (index + 1) * 256 * 1024]
        sessions.put_chunk(earlier, index, piece, hashlib.sha256(piece).hexdigest())
    notes = tmp_path / "notes.svs"
    notes.write_text("sample,stain\nS1,HE\n")

    sign_in(page, asgi_server.url, "olga", PASSWORD)
    page.goto(f"{asgi_server.url}/slides/add/")
    page.wait_for_function("document.body.dataset.ready === 'yes'")
    page.locator("#slide-files").set_input_files([str(source), str(notes)])
    page.wait_for_selector('#slide-uploads li[data-state="done"]', timeout=90_000)
    page.wait_for_selector('#slide-uploads li[data-state="error"]', timeout=90_000)
    done = page.locator('#slide-uploads li[data-state="done"]')
    assert "Ready" in done.text_content() and "tissue tiles" in done.text_content()
    failed = page.locator('#slide-uploads li[data-state="error"]').text_content()
    assert "Not converted" in failed and "text file" in failed
    earlier.refresh_from_db()
    assert earlier.state == "used" and UploadSession.objects.filter(owner=owner).count() == 2
    slide = Slide.objects.get(file_name="biopsy.svs")
    assert slide.state == "ready" and slide.sha256 == hashlib.sha256(data).hexdigest()
    assert slide.project == project
    done.get_by_role("link", name="Open in the viewer").click()
    page.wait_for_function("window.portalViewer && window.portalViewer.loadedLevels.size > 0", timeout=30_000)


def test_a_slide_from_an_encrypted_dataset_in_the_browser(page, asgi_server, celery_worker_process, tmp_path):
    """The add page lists the datasets the user can read; the browser opens the chosen one's key
    with the private key kept in it, the worker decrypts and converts the file."""
    from storage import crypto
    from storage.models import KeyState, UserKey
    from storage.services import uploads

    owner = User.objects.create_user("olga", password=PASSWORD)
    project = create_project(name="Archive", description="", owner=owner)
    private_key = crypto.generate_private_key()
    public = private_key.public_key()
    UserKey.objects.create(
        user=owner,
        name="laptop",
        public_key=crypto.public_key_pem(public),
        fingerprint=crypto.public_key_fingerprint(public),
        state=KeyState.ACTIVE,
    )
    data = write_slide(
        tmp_path / "old-scan.svs", 2000, 1500, [Blob(900, 700, 600, 500)], layout="aperio"
    ).read_bytes()
    dataset = uploads.start_upload(owner=owner, name="Old scan", file_name="old-scan.svs", size=len(data))
    for index in range(dataset.chunk_count):
        piece = data[index * dataset.chunk_size : (index + 1) * dataset.chunk_size]
        uploads.put_chunk(dataset, index, piece, crypto.chunk_hash(piece).hex())
    uploads.finish_upload(dataset, actor=owner)

    sign_in(page, asgi_server.url, "olga", PASSWORD)
    page.goto(f"{asgi_server.url}/keys/")
    page.wait_for_function("window.portalKeys && window.portalKeys.ready")
    page.get_by_label("Or paste the key").fill(crypto.compact_private_key_text(private_key))
    page.get_by_role("button", name="Use pasted key").click()
    page.wait_for_function("document.body.dataset.imported")
    page.goto(f"{asgi_server.url}/slides/add/")
    page.wait_for_function("document.body.dataset.ready === 'yes'")
    page.get_by_label("Dataset", exact=True).select_option(dataset.mnemonic)
    page.get_by_role("button", name="Add as a slide").click()
    page.wait_for_selector('#slide-uploads li[data-state="done"]', timeout=90_000)
    slide = Slide.objects.get(project=project)
    assert slide.state == "ready" and slide.ingress == "dataset" and slide.pyramid.vendor == "aperio"
    assert slide.source_full_path.read_bytes() == data
