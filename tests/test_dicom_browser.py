"""Adding DICOM in headless Chromium: files and a ZIP go in chunks, the worker indexes them, the
page shows the report; the study list and page show the result."""

from __future__ import annotations

import zipfile

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
