"""Encrypted datasets in headless Chromium: keys made in the browser, upload, download decrypted
in the browser, sharing, resuming, duplicates; private keys moving between the browser and Python."""

from __future__ import annotations

import base64
import io
import os
import tarfile
from pathlib import Path

import pytest
import segno

from portal.models import User
from storage import crypto
from storage.models import Dataset, DatasetState, Grant, KeyState, KeyWrap, UserKey
from storage.services import downloads, uploads
from tests.conftest import CHROMIUM
from tests.helpers import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]

PASSWORD = "storage-pw-123"
TIMEOUT = 90_000  # ms: RSA-4096 generation in a browser takes seconds, sometimes many


@pytest.fixture
def lab():
    alice = User.objects.create_user("alice", password=PASSWORD)
    bob = User.objects.create_user("bob", password=PASSWORD)
    boss = User.objects.create_user("boss", password=PASSWORD, is_staff=True)
    return alice, bob, boss


@pytest.fixture(scope="module")
def python_key():
    return crypto.generate_private_key()


def open_page(browser, base: str, username: str, *, no_file_picker: bool = True, service_workers="allow"):
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, accept_downloads=True, service_workers=service_workers
    )
    page = context.new_page()
    if no_file_picker:  # headless: save through a normal download instead of the file dialog
        page.add_init_script("delete window.showSaveFilePicker;")
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, base, username, PASSWORD)
    return context, page


def download_through_page(page, base: str, dataset: Dataset) -> bytes:
    """The dataset page's download (decrypted in the browser): the bytes saved, under the file's name."""
    page.goto(f"{base}/datasets/{dataset.mnemonic}/")
    page.wait_for_function("document.body.dataset.ready === 'yes'")
    with page.expect_download(timeout=TIMEOUT) as download_info:
        page.get_by_role("button", name=f"Download {dataset.file_name}").click()
    assert download_info.value.suggested_filename == dataset.file_name
    page.wait_for_function("document.body.dataset.downloaded === 'yes'")
    return Path(download_info.value.path()).read_bytes()


def same_key(a, b) -> bool:
    return a.private_numbers() == b.private_numbers()


def register_active(user, private_key, name="python key") -> UserKey:
    public = private_key.public_key()
    return UserKey.objects.create(
        user=user,
        name=name,
        public_key=crypto.public_key_pem(public),
        fingerprint=crypto.public_key_fingerprint(public),
        state=KeyState.ACTIVE,
    )


def test_generate_register_upload_download_share(
    browser, asgi_server, celery_worker_process, lab, python_key, tmp_path
):
    alice, bob, boss = lab
    base = asgi_server.url
    context, page = open_page(browser, base, "alice")

    # Alice makes a key in the browser; it is registered and waits for activation.
    page.goto(f"{base}/keys/")
    page.wait_for_function("window.portalKeys && window.portalKeys.ready")
    page.get_by_label("Name of the key").first.fill("office laptop")
    page.get_by_role("button", name="Create key").click()
    page.wait_for_url("**/keys/?created=*", timeout=TIMEOUT)
    page.wait_for_function("window.portalKeys && window.portalKeys.ready")
    key = UserKey.objects.get(user=alice)
    assert key.state == KeyState.PENDING and key.name == "office laptop"
    assert page.locator("#backup").is_visible()
    row = page.locator(f'tr[data-fingerprint="{key.fingerprint}"]')
    assert row.locator(".in-browser").text_content() == "Yes"

    # The key file the page gives is the key Python reads, and so is its QR code's text.
    with page.expect_download() as download_info:
        page.locator("#backup-download").click()
    pem = Path(download_info.value.path()).read_text()
    from_file = crypto.load_private_key(pem)
    assert crypto.public_key_fingerprint(from_file.public_key()) == key.fingerprint
    page.evaluate("window.portalKeys.noPrintDialog = true")
    page.locator("#backup-print").click()
    page.wait_for_function("window.portalKeys.lastQr && document.getElementById('print-qr').complete")
    qr = page.evaluate("window.portalKeys.lastQr")
    assert qr["text"].startswith("RDPK1:") and len(qr["text"]) == 1670
    assert qr["version"] <= 40
    print(f"compact key: {len(qr['text'])} characters, QR version {qr['version']} ({qr['modules']} modules)")
    assert same_key(crypto.private_key_from_compact_text(qr["text"]), from_file)
    assert crypto.compact_private_key_text(from_file) == qr["text"]
    scanned = page.evaluate(
        """async () => {
            const { readQr } = await import('/static/storage/qr.js');
            const img = document.getElementById('print-qr');
            const canvas = Object.assign(document.createElement('canvas'),
                                         {width: img.naturalWidth, height: img.naturalHeight});
            const context = canvas.getContext('2d');
            context.drawImage(img, 0, 0);
            return readQr(context.getImageData(0, 0, canvas.width, canvas.height));
        }"""
    )
    assert scanned == qr["text"]

    # Alice cannot upload before activation; the page says why.
    page.goto(f"{base}/datasets/upload/")
    assert "waiting for a portal administrator" in page.content()

    # The admin activates her key on the Keys page.
    admin_context, admin = open_page(browser, base, "boss")
    admin.goto(f"{base}/keys/")
    admin.get_by_role("button", name="Activate office laptop of alice").click()
    admin.wait_for_load_state()
    assert "is active" in admin.content()
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE
    admin_context.close()

    # Upload: a progress bar per file, done when the dataset is available.
    data = os.urandom(2 * 2 * 1024 * 1024 + 12345)  # three chunks of the default size
    source = tmp_path / "blood counts.bin"
    source.write_bytes(data)
    page.goto(f"{base}/datasets/upload/")
    page.wait_for_function("window.portalUpload && window.portalUpload.ready")
    page.locator("#upload-files").set_input_files(str(source))
    page.wait_for_selector('li.file[data-state="done"]', timeout=TIMEOUT)
    dataset = Dataset.objects.get(owner=alice)
    assert dataset.state == DatasetState.AVAILABLE and dataset.file_name == "blood counts.bin"
    assert dataset.sha256 == crypto.hash_file(source, dataset.chunk_size)[0]

    # The same file again: the page notices, and by default does not upload it.
    page.goto(f"{base}/datasets/upload/")
    page.wait_for_function("window.portalUpload && window.portalUpload.ready")
    page.locator("#upload-files").set_input_files(str(source))
    page.wait_for_selector('li.file[data-state="duplicate"]', timeout=TIMEOUT)
    assert dataset.mnemonic in page.locator("li.file").text_content()
    page.get_by_role("button", name="Don't upload").click()
    page.wait_for_selector('li.file[data-state="skipped"]')
    assert Dataset.objects.filter(owner=alice).count() == 1

    # Download: the browser unwraps the key, decrypts chunk by chunk; the bytes are the same.
    assert download_through_page(page, base, dataset) == data
    assert "decrypted and checked" in page.locator("#download-status").text_content()
    assert page.evaluate("document.body.dataset.sink") == "stream"  # streamed by the service worker

    # Share with Bob (who has an active key): his key opens the data key the browser sent.
    bobs_key = register_active(bob, python_key)
    page.get_by_label("User name").fill("bob")
    page.get_by_label("Access", exact=True).select_option("read")
    page.get_by_role("button", name="Share", exact=True).click()
    page.wait_for_selector('tr[data-grant="bob"]', timeout=TIMEOUT)
    assert Grant.objects.get(dataset=dataset, user=bob).level == "read"
    wrap = KeyWrap.objects.get(dataset=dataset, user_key=bobs_key)
    data_key = crypto.unwrap_key(python_key, bytes(wrap.wrapped))
    assert crypto.key_fingerprint(data_key) == dataset.key_fingerprint
    # Sharing with someone unknown says so.
    page.get_by_label("User name").fill("nobody-here")
    page.get_by_role("button", name="Share", exact=True).click()
    page.wait_for_function("document.getElementById('share-status').className === 'error'")
    assert "No such user" in page.locator("#share-status").text_content()

    # Re-key: a job (on the worker) encrypts it again under a new key; the page follows it.
    page.get_by_role("button", name="Re-key this dataset").click()
    page.wait_for_function("document.body.dataset.rekeyed === 'yes'", timeout=TIMEOUT)
    assert page.evaluate("document.body.dataset.rekeyLive") == "yes"  # pushed over the websocket
    dataset.refresh_from_db()
    assert dataset.generation == 2 and crypto.key_fingerprint(data_key) != dataset.key_fingerprint
    page.wait_for_function("document.body.dataset.ready === 'yes' && !document.body.dataset.rekeyed")
    with page.expect_download(timeout=TIMEOUT) as download_info:
        page.get_by_role("button", name="Download blood counts.bin").click()
    assert Path(download_info.value.path()).read_bytes() == data
    context.close()


def test_resume_after_reload_sends_only_missing_chunks(browser, asgi_server, lab, python_key, tmp_path):
    alice, _, _ = lab
    base = asgi_server.url
    register_active(alice, python_key)
    chunk = 64 * 1024
    data = os.urandom(5 * chunk + 100)
    source = tmp_path / "slides.tar"
    source.write_bytes(data)
    dataset = uploads.start_upload(
        owner=alice, name="slides.tar", file_name="slides.tar", size=len(data), chunk_size=chunk
    )
    for index in (0, 2):  # an upload interrupted earlier
        piece = data[index * chunk : (index + 1) * chunk]
        uploads.put_chunk(dataset, index, piece, crypto.chunk_hash(piece).hex())

    context, page = open_page(browser, base, "alice")
    page.goto(f"{base}/datasets/upload/")
    page.wait_for_function("window.portalUpload && window.portalUpload.ready")
    unfinished = page.locator(f'#unfinished li[data-dataset="{dataset.mnemonic}"]')
    assert "2 of 6 pieces sent" in unfinished.text_content()
    page.locator("#upload-files").set_input_files(str(source))
    page.wait_for_selector('li.file[data-state="done"]', timeout=TIMEOUT)
    assert "4 missing pieces sent" in page.locator("li.file").text_content()
    dataset.refresh_from_db()
    assert dataset.state == DatasetState.AVAILABLE
    assert dataset.sha256 == crypto.hash_file(source, chunk)[0]

    # A different file of the same name and size is not mixed into an unfinished upload.
    other = uploads.start_upload(
        owner=alice, name="b.bin", file_name="b.bin", size=chunk * 2, chunk_size=chunk
    )
    uploads.put_chunk(other, 1, b"\0" * chunk, crypto.chunk_hash(b"\0" * chunk).hex())
    wrong = tmp_path / "b.bin"
    wrong.write_bytes(os.urandom(chunk * 2))
    page.goto(f"{base}/datasets/upload/")
    page.wait_for_function("window.portalUpload && window.portalUpload.ready")
    page.locator("#upload-files").set_input_files(str(wrong))
    page.wait_for_selector('li.file[data-state="error"]', timeout=TIMEOUT)
    assert "differs from the one you began uploading" in page.locator("li.file").text_content()
    context.close()


def make_folder(root: Path) -> dict[str, bytes]:
    """A folder with nesting, an empty file and an empty folder, a long non-ASCII name."""
    files = {
        "scans/notes.txt": b"batch 7, re-scanned\n",
        "scans/empty.dat": b"",
        "scans/run 1/reads.bin": os.urandom(70_000),
        "scans/run 1/" + "Übersicht-" + "x" * 120 + ".csv": "sample;tissue\nS-1;Lunge ü\n".encode(),
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "scans" / "still empty").mkdir()
    return files


def archive_members(dataset: Dataset, private_key) -> tuple[bytes, dict, dict[str, bytes]]:
    wrap = KeyWrap.objects.filter(dataset=dataset, user_key__isnull=False).first()
    data = b"".join(downloads.plaintext(dataset, crypto.unwrap_key(private_key, bytes(wrap.wrapped))))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:  # Python's tar reader, strict about headers
        members = {m.name: m for m in archive.getmembers()}
        contents = {m.name: archive.extractfile(m).read() for m in members.values() if m.isfile()}
    return data, members, contents


def test_a_chosen_folder_is_uploaded_as_one_tar(browser, asgi_server, lab, python_key, tmp_path):
    alice, _, _ = lab
    base = asgi_server.url
    register_active(alice, python_key)
    files = make_folder(tmp_path)
    context, page = open_page(browser, base, "alice")
    page.goto(f"{base}/datasets/upload/")
    page.wait_for_function("window.portalUpload && window.portalUpload.ready")
    page.locator("#upload-folder").set_input_files(str(tmp_path / "scans"))
    page.wait_for_selector('li.file[data-state="done"]', timeout=TIMEOUT)
    dataset = Dataset.objects.get(owner=alice)
    assert dataset.state == DatasetState.AVAILABLE and dataset.file_name == "scans.tar"
    data, members, contents = archive_members(dataset, python_key)
    assert contents == files
    assert members["scans/run 1"].isdir() and members["scans"].isdir()
    assert all(m.uid == 0 and m.uname == "" for m in members.values())
    assert len(data) % 10240 == 0

    # The same folder again packs into the same bytes: the page finds the same dataset.
    page.goto(f"{base}/datasets/upload/")
    page.wait_for_function("window.portalUpload && window.portalUpload.ready")
    page.locator("#upload-folder").set_input_files(str(tmp_path / "scans"))
    page.wait_for_selector('li.file[data-state="duplicate"]', timeout=TIMEOUT)
    assert dataset.mnemonic in page.locator("li.file").text_content()
    context.close()


def test_dropped_folders_are_packed_in_the_browser(browser, asgi_server, lab, python_key, tmp_path):
    """The archive code of a drop (directory entries read recursively), fed a folder as the
    browser's file system API gives it, read back by Python's tarfile and by GNU tar."""
    import shutil
    import subprocess

    register_active(lab[0], python_key)
    files = make_folder(tmp_path)
    context, page = open_page(browser, asgi_server.url, "alice")
    page.goto(f"{asgi_server.url}/datasets/upload/")
    given = {name: base64.b64encode(data).decode() for name, data in files.items()}
    packed = page.evaluate(
        """async (given) => {
        const { entriesOfDirectory, folderArchive } = await import("/static/storage/tar.js");
        // A directory entry as webkitGetAsEntry gives it, over files made here.
        const tree = { name: "scans", children: new Map() };
        for (const [path, data] of Object.entries(given)) {
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          const steps = path.split("/").slice(1);
          const file = new File([bytes], steps.at(-1), { lastModified: 1767225600000 });
          let node = tree;
          for (const step of steps.slice(0, -1)) {
            if (!node.children.has(step)) node.children.set(step, { name: step, children: new Map() });
            node = node.children.get(step);
          }
          node.children.set(steps.at(-1), { name: steps.at(-1), file });
        }
        tree.children.set("still empty", { name: "still empty", children: new Map() });
        const entry = (node) => node.file
          ? { name: node.name, isFile: true, isDirectory: false, file: (ok) => ok(node.file) }
          : { name: node.name, isFile: false, isDirectory: true, createReader() {
                let given = false;  // hands out its entries in two batches, then none
                const all = [...node.children.values()].map(entry);
                return { readEntries(ok) {  // answers later, as the real one does
                  const half = Math.ceil(all.length / 2);
                  const batch = given === 2 ? [] : given ? all.slice(half) : all.slice(0, half);
                  given = given ? 2 : 1;
                  setTimeout(() => ok(batch));
                } };
              } };
        const archive = folderArchive("scans", await entriesOfDirectory(entry(tree)));
        const bytes = new Uint8Array(await archive.arrayBuffer());
        let text = "";
        for (const byte of bytes) text += String.fromCharCode(byte);
        return { name: archive.name, size: archive.size, data: btoa(text) };
    }""",
        given,
    )
    context.close()
    data = base64.b64decode(packed["data"])
    assert packed["name"] == "scans.tar" and packed["size"] == len(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = {m.name: m for m in archive.getmembers()}
        contents = {m.name: archive.extractfile(m).read() for m in members.values() if m.isfile()}
    assert contents == files
    assert members["scans/still empty"].isdir()
    if shutil.which("tar"):
        out = tmp_path / "out"
        out.mkdir()
        (tmp_path / "packed.tar").write_bytes(data)
        subprocess.run(["tar", "-xf", str(tmp_path / "packed.tar"), "-C", str(out)], check=True)
        for name, content in files.items():
            assert (out / name).read_bytes() == content


def test_keys_made_in_python_import_into_the_browser(browser, asgi_server, lab, python_key, tmp_path):
    alice, _, _ = lab
    base = asgi_server.url
    registered = register_active(alice, python_key, name="made with openssl")
    context, page = open_page(browser, base, "alice")
    page.goto(f"{base}/keys/")
    page.wait_for_function("window.portalKeys && window.portalKeys.ready")
    row = page.locator(f'tr[data-fingerprint="{registered.fingerprint}"]')
    assert row.locator(".in-browser").text_content() == "No"

    def imported() -> str:
        page.wait_for_function("document.body.dataset.imported", timeout=TIMEOUT)
        found = page.evaluate("document.body.dataset.imported")
        page.evaluate("delete document.body.dataset.imported; localStorage.clear()")
        return found

    # The compact text, pasted.
    page.get_by_label("Or paste the key").fill(crypto.compact_private_key_text(python_key))
    page.get_by_role("button", name="Use pasted key").click()
    assert imported() == registered.fingerprint
    assert (
        "Your key “made with openssl” is now in this browser" in page.locator("#import-status").text_content()
    )

    # PEM files: PKCS#8 (ssh-keygen -m pkcs8, openssl genpkey) and PKCS#1 (openssl genrsa -traditional).
    pkcs8 = tmp_path / "key.pem"
    pkcs8.write_text(crypto.private_key_pem(python_key))
    page.locator("#import-file").set_input_files(str(pkcs8))
    assert imported() == registered.fingerprint
    from cryptography.hazmat.primitives import serialization

    def key_file(name: str, form, encryption=None) -> str:
        path = tmp_path / name
        encryption = encryption or serialization.NoEncryption()
        path.write_bytes(python_key.private_bytes(serialization.Encoding.PEM, form, encryption))
        return str(path)

    page.locator("#import-file").set_input_files(
        key_file("key-rsa.pem", serialization.PrivateFormat.TraditionalOpenSSL)
    )
    assert imported() == registered.fingerprint

    # OpenSSH's own format (ssh-keygen's default).
    page.locator("#import-file").set_input_files(key_file("id_rsa", serialization.PrivateFormat.OpenSSH))
    assert imported() == registered.fingerprint

    # Password-protected PKCS#8 (openssl pkey -aes256, ssh-keygen -m pkcs8 -N …, Python's
    # cryptography): the page asks for the password, refuses a wrong one, opens it with the right one.
    locked = key_file(
        "key-locked.pem",
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"correct horse"),
    )
    page.locator("#import-file").set_input_files(locked)
    password = page.get_by_label("Password of the key file")
    password.wait_for(state="visible", timeout=TIMEOUT)
    assert "protected by a password" in page.locator("#import-status").text_content()
    password.fill("wrong horse")
    page.get_by_role("button", name="Open the key").click()
    page.wait_for_function(
        "document.getElementById('import-status').textContent.includes('password is not right')"
    )
    password.fill("correct horse")
    password.press("Enter")
    assert imported() == registered.fingerprint
    assert page.locator("#import-password-field").is_hidden()
    # The old "Proc-Type: 4,ENCRYPTED" form gets the command that converts it.
    old_form = python_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"correct horse"),
    ).decode()
    page.get_by_label("Or paste the key").fill(old_form)
    page.get_by_role("button", name="Use pasted key").click()
    page.wait_for_function(
        "document.getElementById('import-status').textContent.includes('openssl pkcs8 -topk8')"
    )

    # A photo of the printed QR code (here: a PNG made in Python).
    picture = tmp_path / "qr.png"
    segno.make_qr(crypto.compact_private_key_text(python_key), error="l").save(str(picture), scale=6)
    page.locator("#import-file").set_input_files(str(picture))
    assert imported() == registered.fingerprint

    # A damaged key text and a public key are refused with a clear message.
    text = crypto.compact_private_key_text(python_key)
    damaged = text[:100] + ("A" if text[100] != "A" else "B") + text[101:]
    page.get_by_label("Or paste the key").fill(damaged)
    page.get_by_role("button", name="Use pasted key").click()
    page.wait_for_function("document.getElementById('import-status').className === 'error'")
    assert "checksum does not match" in page.locator("#import-status").text_content()
    page.get_by_label("Or paste the key").fill(crypto.public_key_pem(python_key.public_key()))
    page.get_by_role("button", name="Use pasted key").click()
    page.wait_for_function("document.getElementById('import-status').textContent.includes('public key')")

    # And the other way: a key made by the browser's code reads back in Python.
    exported = page.evaluate(
        """async () => {
            const c = await import('/static/storage/crypto.js');
            const pair = await c.generateKeyPair();
            const described = await c.describePrivateKey(pair.privateKey);
            return {compact: await c.compactText(pair.privateKey), pem: await c.privatePem(pair.privateKey),
                    jwk: JSON.stringify(described.jwk), fingerprint: described.fingerprint};
        }"""
    )
    from_compact = crypto.private_key_from_compact_text(exported["compact"])
    assert same_key(from_compact, crypto.load_private_key(exported["pem"]))
    assert same_key(from_compact, crypto.load_private_key(exported["jwk"]))
    assert crypto.public_key_fingerprint(from_compact.public_key()) == exported["fingerprint"]

    # Chunks encrypted by the server decrypt with the browser's code (same associated data).
    data_key = crypto.new_data_key()
    nonce, ciphertext = crypto.encrypt_chunk(data_key, "calm_brave_otter", 7, b"hello chunk")
    plain = page.evaluate(
        """async ([key, nonce, ciphertext]) => {
            const c = await import('/static/storage/crypto.js');
            const k = await c.importDataKey(c.fromBase64(key));
            const out = await c.decryptChunk(k, 'calm_brave_otter', 7, nonce, c.fromBase64(ciphertext));
            return new TextDecoder().decode(out);
        }""",
        [base64.b64encode(value).decode() for value in (data_key, nonce, ciphertext)],
    )
    assert plain == "hello chunk"
    context.close()


def y4m_of_qr(text: str, path: Path, width: int = 640, height: int = 480, scale: int = 3) -> None:
    """A still video (YUV4MPEG2) of the printed key's QR code, for Chromium's fake camera."""
    rows = list(segno.make_qr(text, error="l").matrix_iter(scale=scale, border=4))
    top, left = (height - len(rows)) // 2, (width - len(rows[0])) // 2
    luma = bytearray([235]) * (width * height)
    for y, row in enumerate(rows):
        for x, dark in enumerate(row):
            if dark:
                luma[(top + y) * width + left + x] = 16
    chroma = bytes([128]) * (width // 2 * height // 2)
    frame = b"FRAME\n" + bytes(luma) + chroma + chroma
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F5:1 Ip A1:1 C420jpeg\n".encode() + frame * 3)


def test_scanning_the_printed_key_with_the_camera(browser, asgi_server, lab, python_key, tmp_path):
    alice, _, _ = lab
    registered = register_active(alice, python_key, name="paper copy")
    video = tmp_path / "camera.y4m"
    y4m_of_qr(crypto.compact_private_key_text(python_key), video)
    camera_browser = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}",
        ],
    )
    try:
        context = camera_browser.new_context(permissions=["camera"])
        page = context.new_page()
        sign_in(page, asgi_server.url, "alice", PASSWORD)
        page.goto(f"{asgi_server.url}/keys/")
        page.wait_for_function("window.portalKeys && window.portalKeys.ready")
        page.get_by_role("button", name="Scan QR code with camera").click()
        page.wait_for_function("document.body.dataset.imported", timeout=TIMEOUT)
        assert page.evaluate("document.body.dataset.imported") == registered.fingerprint
        assert "now in this browser" in page.locator("#import-status").text_content()
        assert page.locator("#scan-view").is_hidden()  # the camera is off again
    finally:
        camera_browser.close()


def uploaded(owner, data: bytes, name: str, chunk: int = 64 * 1024) -> Dataset:
    dataset = uploads.start_upload(owner=owner, name=name, file_name=name, size=len(data), chunk_size=chunk)
    for index in range(dataset.chunk_count):
        piece = data[index * chunk : (index + 1) * chunk]
        uploads.put_chunk(dataset, index, piece, crypto.chunk_hash(piece).hex())
    return uploads.finish_upload(dataset)


def bring_key(page, base: str, private_key) -> None:
    page.goto(f"{base}/keys/")
    page.wait_for_function("window.portalKeys && window.portalKeys.ready")
    page.get_by_label("Or paste the key").fill(crypto.compact_private_key_text(private_key))
    page.get_by_role("button", name="Use pasted key").click()
    page.wait_for_function("document.body.dataset.imported", timeout=TIMEOUT)


@pytest.mark.parametrize("service_workers", ["allow", "block"])
def test_downloads_stream_to_disk_or_fall_back_and_damage_fails_them(
    browser, asgi_server, lab, python_key, service_workers
):
    """Without a file picker the page streams the download through its service worker (memory
    stays a few chunks, however large the file); where service workers are blocked it collects
    the file in memory. Either way a damaged chunk fails the download instead of ending it."""
    alice, _, _ = lab
    base = asgi_server.url
    register_active(alice, python_key)
    data = os.urandom(40 * 64 * 1024 + 1234)  # 41 chunks: far more than the stream keeps in flight
    dataset = uploaded(alice, data, "scan série 7.bin")
    context, page = open_page(browser, base, "alice", service_workers=service_workers)
    bring_key(page, base, python_key)
    assert download_through_page(page, base, dataset) == data
    expected = "stream" if service_workers == "allow" else "memory"
    assert page.evaluate("document.body.dataset.sink") == expected

    path = downloads.chunkstore.chunk_path(dataset, 30)
    damaged = bytearray(path.read_bytes())
    damaged[100] ^= 1
    path.write_bytes(bytes(damaged))
    page.reload()
    page.wait_for_function("document.body.dataset.ready === 'yes'")
    if service_workers == "allow":
        with page.expect_download(timeout=TIMEOUT) as download_info:
            page.get_by_role("button", name="Download scan série 7.bin").click()
        assert download_info.value.failure() is not None  # not a complete-looking, short file
    else:
        page.get_by_role("button", name="Download scan série 7.bin").click()
    page.wait_for_function("document.getElementById('download-status').className === 'error'")
    assert "Chunk 30 failed its integrity check" in page.locator("#download-status").text_content()
    context.close()
