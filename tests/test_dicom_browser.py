"""Adding DICOM in headless Chromium: files and a ZIP go in chunks, the worker indexes them, the
page shows the report; the study list and page show the result."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from imaging.models import Study
from metadata.services.projects import create_project
from portal.models import User
from tests.helpers import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]
PASSWORD = "dicom-pw-123"


def test_adding_dicom_in_the_browser(page, asgi_server, celery_worker_process, tmp_path):
    owner = User.objects.create_user("olga", password=PASSWORD)
    project = create_project(name="Radiology", description="", owner=owner)
    bundle = tmp_path / "export.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.write(get_testdata_file("MR_small.dcm"), "export/IM0001")
        archive.writestr("export/readme.txt", "from the scanner\n")
    notes = tmp_path / "notes.dcm"
    notes.write_text("not an image\n")
    sign_in(page, asgi_server.url, "olga", PASSWORD)
    page.goto(f"{asgi_server.url}/studies/add/")
    page.wait_for_function("document.body.dataset.ready === 'yes'")
    page.locator("#dicom-files").set_input_files([get_testdata_file("CT_small.dcm"), str(bundle), str(notes)])
    page.get_by_role("button", name="Send and index").click()
    page.wait_for_function("document.body.dataset.ingested", timeout=60_000)
    report = page.locator("#dicom-report").inner_text()
    assert "2 accepted" in report and "2 rejected" in report
    assert "notes.dcm: rejected – not DICOM: found a text file" in report
    assert Study.objects.filter(project=project).count() == 2
    page.get_by_role("link", name="See the studies").click()
    page.wait_for_selector("table.studies")
    assert page.locator("table.studies tbody tr").count() == 2
    page.locator("table.studies tbody tr th a").first.click()
    page.wait_for_selector(".series-card")
    assert "Quality checks passed." in page.locator(".series-card").first.inner_text()
    # the series thumbnails (rendered by WADO-RS) load
    page.wait_for_function(
        "[...document.querySelectorAll('.series-card img')].every(i => i.complete && i.naturalWidth > 0)"
    )


def test_the_viewer_scrolls_windows_and_plays_frames(page, asgi_server, tmp_path):
    """The built-in viewer: wheel through a stack, a window preset re-renders, a multi-frame
    dose plays as cine, the tag browser shows the instance."""
    import pydicom

    from imaging.models import IngestRun
    from imaging.services.ingest import run_ingest

    owner = User.objects.create_user("olga", password=PASSWORD)
    project = create_project(name="Radiology", description="", owner=owner)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    items = []
    for number in (1, 2, 3):
        copy = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        copy.SOPInstanceUID = f"{base.SOPInstanceUID}.{number}"
        copy.InstanceNumber = number
        path = tmp_path / f"{number}.dcm"
        copy.save_as(path)
        items.append((path.name, path))
    items.append(("dose.dcm", Path(get_testdata_file("rtdose.dcm"))))
    run_ingest(IngestRun.objects.create(project=project, source="upload"), items)
    ct = Study.objects.get(study_uid=base.StudyInstanceUID)
    sign_in(page, asgi_server.url, "olga", PASSWORD)
    page.goto(f"{asgi_server.url}/studies/{ct.pk}/view/")
    page.wait_for_function("Number(document.body.dataset.loaded || 0) >= 1", timeout=30_000)
    assert "Slice 1 of 3" in page.locator("#position").inner_text()
    page.locator("#stack-view").hover()
    page.mouse.wheel(0, 120)
    page.wait_for_function("Number(document.body.dataset.loaded) >= 2")
    assert "Slice 2 of 3" in page.locator("#position").inner_text()
    page.wait_for_function(f"document.body.dataset.tags === '{base.SOPInstanceUID}.2'")
    page.locator("#tag-filter").fill("PatientID")
    assert base.PatientID in page.locator("#tag-rows").inner_text()
    before = page.locator("#stack-image").get_attribute("src")
    page.locator("#window-preset").select_option("lung")
    page.wait_for_function("Number(document.body.dataset.loaded) >= 3")
    assert "window=-600,1500" in page.locator("#stack-image").get_attribute("src") != before
    dose = Study.objects.exclude(pk=ct.pk).get(project=project)
    page.goto(f"{asgi_server.url}/studies/{dose.pk}/view/")
    page.wait_for_function("Number(document.body.dataset.loaded || 0) >= 1", timeout=30_000)
    page.get_by_role("button", name="Play").click()
    page.wait_for_function(
        "document.querySelector('#position').textContent.includes('frame 3 of')", timeout=30_000
    )
    page.get_by_role("button", name="Stop").click()
