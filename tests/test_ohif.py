"""The OHIF viewer of deploy/ohif/, built as its image builds it (build.sh) and served by its nginx
configuration behind the portal's deploy/nginx.conf, lists and shows a study from the portal's
DICOMweb in headless Chromium with the signed-in user's session."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from conftest import REPO_ROOT, ManagedProcess, free_port
from imaging.models import IngestRun
from imaging.services.ingest import run_ingest
from metadata.services.projects import create_project
from portal.models import User
from tests.helpers import sign_in
from tests.test_deploy import DEPLOY, NGINX, nginx_config, self_signed_certificate, wait_http

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]
PASSWORD = "ohif-pw-123"
OHIF = DEPLOY / "ohif"


def ohif_build() -> Path:
    """OHIF's files as deploy/ohif/Dockerfile prepares them, kept in .cache/ between runs (build.sh
    fetches the pinned release from npm; it is rebuilt when build.sh or app-config.js change)."""
    version = re.search(r"^ARG OHIF_VERSION=(\S+)$", (OHIF / "Dockerfile").read_text(), re.M).group(1)
    recipe = hashlib.sha256(
        version.encode() + (OHIF / "build.sh").read_bytes() + (OHIF / "app-config.js").read_bytes()
    ).hexdigest()[:16]
    dest = REPO_ROOT / ".cache" / f"ohif-{recipe}"
    if not (dest / "OHIF_VERSION").exists():
        if shutil.which("npm") is None:
            pytest.fail("npm is needed to fetch OHIF (Node.js is on every machine of this project)")
        subprocess.run(["sh", str(OHIF / "build.sh"), str(dest), version], check=True, timeout=600)
    return dest


def ohif_site(tmp: Path, port: int, files: Path) -> Path:
    """deploy/ohif/nginx.conf with this machine's port and the built files."""
    site = (OHIF / "nginx.conf").read_text()
    root = tmp / "ohif-root"
    root.mkdir()
    (root / "ohif").symlink_to(files)
    for old, new in {
        "listen 8080;": f"listen 127.0.0.1:{port};",
        "root /usr/share/nginx/html;": f"root {root};",
    }.items():
        assert old in site, old
        site = site.replace(old, new)
    site = "\n".join(line for line in site.splitlines() if "listen [::]" not in line)
    path = tmp / "ohif-site.conf"
    path.write_text(site)
    return path


def test_ohif_lists_and_shows_a_portal_study(browser, asgi_server, service_env, service_logs, tmp_path):
    if NGINX is None:
        pytest.fail("Debian's nginx is needed for this test (./dev test installs it as root)")
    files = ohif_build()
    owner = User.objects.create_user("olga", password=PASSWORD)
    project = create_project(name="Radiology", description="", owner=owner)
    items = []
    for number in (1, 2, 3):
        copy = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        copy.SOPInstanceUID = f"{copy.SOPInstanceUID}.{number}"
        copy.InstanceNumber = number
        copy.ImagePositionPatient = [0, 0, number * 5]
        path = tmp_path / f"{number}.dcm"
        copy.save_as(path)
        items.append((path.name, path))
    run_ingest(IngestRun.objects.create(project=project, source="upload"), items)
    study_uid = copy.StudyInstanceUID

    web_port = int(asgi_server.url.rsplit(":", 1)[1])
    http_port, https_port, ohif_port = free_port(), free_port(), free_port()
    self_signed_certificate(tmp_path)
    config = nginx_config(
        tmp_path,
        web_port,
        http_port,
        https_port,
        ohif_port=ohif_port,
        extra_sites=(ohif_site(tmp_path, ohif_port, files),),
    )
    nginx = ManagedProcess("nginx-ohif", [NGINX, "-c", str(config)], service_env, service_logs).start()
    # Cookies belong to the host, not the port: signing in on the portal's own server signs in
    # the browser for the proxy on the same host too.
    base = f"https://127.0.0.1:{https_port}"
    context = browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    page = context.new_page()
    failures: list[str] = []
    dicomweb: list[str] = []

    def watch(response):
        if response.status >= 400:
            console.append(f"{response.status} {response.url}")
        if "/dicomweb/" in response.url:
            dicomweb.append(response.url)
            if response.status >= 400:
                failures.append(f"{response.status} {response.url}")

    console: list[str] = []
    page.on("response", watch)
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"[:300]))
    try:
        import requests

        wait_http(requests, f"http://127.0.0.1:{ohif_port}/ohif/app-config.js")
        # Someone not signed in gets no data from DICOMweb through the proxy.
        session = requests.Session()
        session.trust_env = False
        refused = session.get(f"{base}/dicomweb/studies", verify=False, timeout=5)
        assert refused.status_code in (401, 403)

        sign_in(page, asgi_server.url, "olga", PASSWORD)
        # The study list: OHIF searches the portal's QIDO-RS.
        page.goto(f"{base}/ohif/")
        row = page.get_by_text(str(copy.PatientName).replace("^", ", "), exact=False).first
        row.wait_for(timeout=60_000)
        assert any("/dicomweb/studies" in url for url in dicomweb)
        # The viewer: series metadata and pixel data by WADO-RS, drawn into the viewport.
        page.goto(f"{base}/ohif/viewer?StudyInstanceUIDs={study_uid}")
        page.wait_for_function(
            "() => [...document.querySelectorAll('canvas')].some(c => c.width > 100 && c.height > 100)",
            timeout=60_000,
        )
        page.wait_for_function(
            "() => performance.getEntriesByType('resource').some(e => /\\/frames\\/1/.test(e.name))",
            timeout=60_000,
        )
        deadline = time.monotonic() + 60
        while not any("studyToFirstImage" in line for line in console):  # OHIF's own timing log
            assert time.monotonic() < deadline, "OHIF never showed the first image"
            page.wait_for_timeout(200)
        # The slice is drawn: the middle of the viewport is not one flat colour (a decoding
        # failure leaves it black).
        shot = Image.open(io.BytesIO(page.screenshot(clip={"x": 500, "y": 250, "width": 500, "height": 500})))
        assert np.asarray(shot.convert("L"), dtype=float).std() > 20
        assert any(f"/studies/{study_uid}/series/" in url and url.endswith("/metadata") for url in dicomweb)
        assert not failures, failures
    except Exception:
        # What OHIF asked for and said, and what it showed, for whoever reads the failure.
        page.screenshot(path=str(tmp_path / "ohif.png"))
        print(
            "\n".join(dicomweb),
            "\n".join(console[-40:]),
            f"screenshot: {tmp_path / 'ohif.png'}",
            sep="\n----\n",
        )
        raise
    finally:
        context.close()
        nginx.stop()
