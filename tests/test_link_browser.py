"""Upload links in headless Chromium: the owner makes a link; someone without an account opens it,
drops a file, loses the connection, reloads, drops the same file again and it goes on; the owner
then reads exactly those bytes with their key."""

from __future__ import annotations

import base64
import datetime as dt
import io
import os
import tarfile

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from portal.models import AuditEvent, User
from storage import crypto
from storage.models import Dataset, DatasetState, KeyState, UploadLink, UserKey
from storage.services import links
from storage.tests.helpers import key_header, unwrap
from tests.helpers import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]

PASSWORD = "links-pw-123"
DROP = """([name, data, modified]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { lastModified: modified }));
  const zone = document.querySelector("[data-drop-zone]");
  zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
  zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
}"""


@pytest.fixture(scope="module")
def owner_key():
    return crypto.generate_private_key()


def owner_with_key(private_key) -> User:
    owner = User.objects.create_user("olga", password=PASSWORD, first_name="Olga", last_name="Owner")
    public = private_key.public_key()
    UserKey.objects.create(
        user=owner,
        name="laptop",
        public_key=crypto.public_key_pem(public),
        fingerprint=crypto.public_key_fingerprint(public),
        state=KeyState.ACTIVE,
    )
    return owner


def drop(page, name: str, data: bytes, modified: int = 1_700_000_000_000) -> None:
    page.evaluate(DROP, [name, base64.b64encode(data).decode(), modified])


def test_owner_makes_a_link_and_a_stranger_uploads_through_it_with_a_resume(
    browser, page, asgi_server, owner_key, settings, tmp_path
):
    owner = owner_with_key(owner_key)
    base = asgi_server.url
    sign_in(page, base, "olga", PASSWORD)
    page.goto(f"{base}/upload-links/")
    page.get_by_label("Label").fill("Sequencing run 42")
    page.get_by_label("Size limit").fill("50 MB")
    page.get_by_label("File limit").fill("3")
    page.get_by_role("button", name="Create link").click()
    url = page.locator("[data-new-link-url]").input_value()
    assert url.startswith(f"{base}/upload/rdu_")

    # Someone without an account: a fresh browser context, no cookies.
    guest = browser.new_context(viewport={"width": 1200, "height": 900})
    upload_page = guest.new_page()
    upload_page.on("dialog", lambda dialog: dialog.accept())
    upload_page.goto(url)
    upload_page.wait_for_selector("[data-link-upload][data-ready=true]")
    assert upload_page.get_by_role("heading", level=1).inner_text() == "Send files to Olga Owner"
    assert "3 files" in upload_page.locator("[data-remaining]").inner_text()

    size = settings.STORAGE_CHUNK_SIZE
    data = os.urandom(2 * size + 12_345)  # three chunks
    # The connection breaks before the second chunk: the first arrives, then the page retries…
    upload_page.route("**/chunks/1/", lambda route: route.abort())
    drop(upload_page, "run42.fastq.gz", data)
    upload_page.wait_for_function(
        "document.querySelector('.upload-status').textContent.includes('Trying again')", timeout=30_000
    )
    # …the uploader gives up, reloads and drops the same file again: it goes on.
    upload_page.unroute("**/chunks/1/")
    upload_page.reload()
    upload_page.wait_for_selector("[data-link-upload][data-ready=true]")
    drop(upload_page, "run42.fastq.gz", data)
    upload_page.wait_for_selector("li[data-state=done]", timeout=60_000)
    assert upload_page.locator("li[data-state=done] progress").evaluate("bar => bar.value") == 100
    assert "Sent." in upload_page.locator("li[data-state=done] .upload-status").inner_text()
    # A folder goes as one TAR archive, packed in the guest's browser.
    folder = tmp_path / "run42-extra"
    (folder / "qc").mkdir(parents=True)
    (folder / "qc" / "report.txt").write_text("all lanes passed\n")
    (folder / "samplesheet.csv").write_text("sample,lane\nS1,1\n")
    upload_page.locator("#link-folder").set_input_files(str(folder))
    done = "document.querySelectorAll('li[data-state=done]').length === 2"
    upload_page.wait_for_function(done, timeout=60_000)
    upload_page.screenshot(path=str(asgi_server.log_path.parent / "link-upload-page.png"), full_page=True)
    guest.close()

    link = UploadLink.objects.get()
    archived = Dataset.objects.get(upload_link=link, file_name="run42-extra.tar")
    dataset = Dataset.objects.get(upload_link=link, file_name="run42.fastq.gz")
    assert dataset.state == DatasetState.AVAILABLE and dataset.owner == owner and dataset.uploaded_by is None
    chunk_uses = AuditEvent.objects.filter(
        action="storage.upload_link_used", details__operation="chunk", details__dataset=dataset.mnemonic
    )
    assert sorted(e.details["index"] for e in chunk_uses) == [0, 1, 2]  # chunk 0 was not sent again
    assert AuditEvent.objects.filter(action="storage.upload_link_used", details__operation="chunks").exists()

    client = APIClient()
    client.force_authenticate(owner)
    key = unwrap(client, dataset.mnemonic, owner_key)
    content = client.get(f"/api/v1/datasets/{dataset.mnemonic}/content/", headers=key_header(key))
    assert b"".join(content.streaming_content) == data
    key = unwrap(client, archived.mnemonic, owner_key)
    content = client.get(f"/api/v1/datasets/{archived.mnemonic}/content/", headers=key_header(key))
    with tarfile.open(fileobj=io.BytesIO(b"".join(content.streaming_content))) as archive:
        assert archive.extractfile("run42-extra/qc/report.txt").read() == b"all lanes passed\n"
        assert archive.extractfile("run42-extra/samplesheet.csv").read() == b"sample,lane\nS1,1\n"

    page.goto(f"{base}/upload-links/")
    assert "2 files arrived through" in page.locator(".link-uses summary").inner_text()


def test_a_revoked_link_says_so_and_an_expired_one_stops_an_upload(page, asgi_server, owner_key):
    owner = owner_with_key(owner_key)
    revoked, revoked_token = links.create_link(
        owner, label="old", expires_at=timezone.now() + dt.timedelta(days=1)
    )
    links.revoke_link(revoked, actor=owner)
    response = page.goto(f"{asgi_server.url}/upload/{revoked_token}/")
    assert response.status == 403
    assert "revoked by its owner" in page.get_by_role("alert").inner_text()

    link, token = links.create_link(owner, label="new", expires_at=timezone.now() + dt.timedelta(days=1))
    page.goto(f"{asgi_server.url}/upload/{token}/")
    page.wait_for_selector("[data-link-upload][data-ready=true]")
    UploadLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    drop(page, "late.txt", b"too late")
    page.wait_for_selector("li[data-state=error]")
    alert = page.locator("[data-link-alert]")
    assert alert.is_visible() and "expired on" in alert.inner_text()
    assert not Dataset.objects.exists()
