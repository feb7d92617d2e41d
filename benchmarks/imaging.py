"""Benchmark of DICOM: ingest through STOW-RS and C-STORE, QIDO-RS study search and WADO-RS series
metadata, each beside Orthanc (Debian's `orthanc` with its DICOMweb plugin `orthanc-dicomweb`)
doing the same on loopback in the same run.

- Ingest: 2,000 small instances (copies of pydicom's CT_small.dcm with new UIDs: 2 studies of one
  1,000-instance series each; 400 with --quick), instances per second
  - STOW-RS: batches of 50 instances per request, 4 requests at a time (Python `requests`), to the
    portal's `/dicomweb/projects/<id>/studies` (bearer token, writer role checked) and to Orthanc's
    `/dicom-web/studies` (HTTP basic authentication);
  - C-STORE: DCMTK's `storescu` (TCP_NODELAY=1) sending the folder over one association to the
    portal's receiver (`manage.py dicom_receiver`, called AE title `PROJECT<id>`; timed until
    every instance is in the index) and to Orthanc's DICOM server (also started with
    TCP_NODELAY=1: DCMTK inside it otherwise delays each answer by ~40 ms).
- QIDO-RS: 10,000 studies (one instance each; 2,000 with --quick) with varied patients, dates,
  modalities and descriptions; median latency of a mix of searches (patient name wildcard,
  patient ID, date range, modality, description, a page deep in the list), each repeated.
- WADO-RS metadata of one 1,000-instance series (the first STOW study): median of repeats.

Both sides store to the same disk with their default durability (the portal's PostgreSQL with
fsync; Orthanc with its SQLite index and `SyncStorageArea`). Targets (issue): ingest ≥ 1× Orthanc
(both paths); QIDO median ≤ 50 ms; series metadata ≤ 1 s.
Run alone: `.venv/bin/python -m benchmarks.imaging [--quick]` (needs `orthanc`, `orthanc-dicomweb`
and `dcmtk` from Debian: `apt-get install orthanc orthanc-dicomweb dcmtk`).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from portal.httpserver import PROTOCOL as HTTP_PROTOCOL

FULL = {"ingest": 2000, "series": 1000, "studies": 10_000, "repeats": 20, "metadata_repeats": 7}
QUICK = {"ingest": 400, "series": 200, "studies": 2_000, "repeats": 8, "metadata_repeats": 3}
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
STOW_BATCH = 50
STOW_CLIENTS = 4
SURNAMES = ["SMITH", "JONES", "MILLER", "GARCIA", "MARTIN", "MUELLER", "ROSSI", "DUBOIS", "NOVAK", "SATO"]
DESCRIPTIONS = ["CT chest", "CT abdomen", "MR brain", "PET whole body", "CT head", "MR knee", "US liver"]


def uid(*parts: int) -> str:
    return "2.25.9" + "".join(f".{p}" for p in parts)


def instances(prefix: int, count: int, per_series: int):
    """Part 10 bytes of `count` CT instances, `per_series` to a series, one series per study."""
    import pydicom
    from pydicom.data import get_testdata_file

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for number in range(count):
        series = number // per_series
        template.StudyInstanceUID = uid(prefix, series)
        template.SeriesInstanceUID = uid(prefix, series, 1)
        template.SOPInstanceUID = uid(prefix, series, 1, number)
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.PatientID = f"BENCH{prefix}-{series}"
        template.InstanceNumber = number % per_series + 1
        template.ImagePositionPatient = [0, 0, float(number % per_series)]
        buffer = io.BytesIO()
        template.save_as(buffer, enforce_file_format=True)
        yield template.SOPInstanceUID, buffer.getvalue()


def search_studies(prefix: int, count: int):
    """Part 10 bytes of `count` one-instance studies with varied search attributes."""
    import pydicom
    from pydicom.data import get_testdata_file

    rng = random.Random(11)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for number in range(count):
        template.StudyInstanceUID = uid(prefix, number)
        template.SeriesInstanceUID = uid(prefix, number, 1)
        template.SOPInstanceUID = uid(prefix, number, 1, 1)
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.PatientName = f"{rng.choice(SURNAMES)}^{chr(65 + number % 26)}{number}"
        template.PatientID = f"P{number:06d}"
        template.StudyDate = f"20{10 + number % 15:02d}{1 + number % 12:02d}{1 + number % 28:02d}"
        description = rng.choice(DESCRIPTIONS)
        template.StudyDescription = description
        template.Modality = description.split()[0]
        template.AccessionNumber = f"A{number:07d}"
        buffer = io.BytesIO()
        template.save_as(buffer, enforce_file_format=True)
        yield buffer.getvalue()


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    boundary = "benchmark-boundary-7f1d"
    body = io.BytesIO()
    for part in parts:
        body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        body.write(part)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow(url: str, data: list[bytes], auth=None, headers=None) -> float:
    """Seconds to store `data` in batches, several requests at a time."""
    import requests

    batches = [data[i : i + STOW_BATCH] for i in range(0, len(data), STOW_BATCH)]
    local = threading.local()

    def send(batch: list[bytes]) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.trust_env = False
        body, content_type = multipart(batch)
        response = session.post(
            url,
            data=body,
            auth=auth,
            headers={**(headers or {}), "Content-Type": content_type, "Accept": "application/dicom+json"},
            timeout=300,
        )
        if response.status_code != 200:
            raise RuntimeError(f"STOW to {url}: {response.status_code} {response.text[:500]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(STOW_CLIENTS) as pool:
        list(pool.map(send, batches))
    return time.perf_counter() - start


def storescu(folder: Path, port: int, called: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [
            "storescu",
            "-aet",
            "BENCHSCU",
            "-aec",
            called,
            "+sd",
            "+r",
            "-nh",
            "127.0.0.1",
            str(port),
            str(folder),
        ],
        capture_output=True,
        text=True,
        # Without it DCMTK leaves Nagle's algorithm on and each instance waits ~40 ms for a delayed
        # acknowledgement, whichever server answers: the run would measure TCP timers.
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"storescu to {called}@{port}: {result.stderr[-2000:]}")
    return seconds


class Orthanc:
    def __init__(self, root: Path, log):
        from benchmarks.storage import free_port

        self.root = root
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.auth = ("bench", "bench-orthanc")
        config = {
            "Name": "benchmark",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.auth[0]: self.auth[1]},
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "HttpCompressionEnabled": False,
            "SaveJobs": False,
        }
        (root / "orthanc.json").write_text(json.dumps(config, indent=2))
        self.log_file = open(root / "orthanc.log", "wb")
        self.process = subprocess.Popen(
            [ORTHANC, str(root / "orthanc.json")],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Orthanc's DICOM server is DCMTK's: without this its answers wait for delayed ACKs.
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        import requests

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/system", auth=self.auth, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not start: {(root / 'orthanc.log').read_text()[-2000:]}")

    def get(self, path: str):
        import requests

        response = requests.get(f"{self.url}{path}", auth=self.auth, timeout=60)
        response.raise_for_status()
        return response.json()

    def post_instances(self, data: list[bytes]) -> None:
        import requests

        local = threading.local()

        def send(blob: bytes) -> None:
            session = getattr(local, "session", None)
            if session is None:
                session = local.session = requests.Session()
                session.trust_env = False
            response = session.post(f"{self.url}/instances", data=blob, auth=self.auth, timeout=60)
            response.raise_for_status()

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, data))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log_file.close()


def portal_project(name: str):
    import datetime as dt

    from django.utils import timezone

    from metadata.models import Project
    from metadata.services.projects import create_project
    from portal.models import User
    from portal.services.tokens import create_api_token

    user, _ = User.objects.get_or_create(username="bench-imaging")
    Project.objects.filter(name=name).delete()
    project = create_project(name=name, description="Generated for benchmarks.", owner=user)
    _, token = create_api_token(
        user, name="bench", scopes=["read", "write"], expires_at=timezone.now() + dt.timedelta(hours=2)
    )
    return project, token


def load_portal(project, data: list[bytes], folder: Path) -> None:
    """Index studies for the search benchmark (in this process; not timed)."""
    from imaging.models import IngestRun
    from imaging.services.ingest import run_ingest

    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(data), 1000):
        items = []
        for number, blob in enumerate(data[start : start + 1000], start):
            path = folder / f"{number}.dcm"
            path.write_bytes(blob)
            items.append((path.name, path))
        run = run_ingest(IngestRun.objects.create(project=project, source="upload"), items)
        assert run.accepted == len(items), run.message
        for _, path in items:
            path.unlink(missing_ok=True)


def latencies(session, url: str, queries: list[str], repeats: int, **kwargs) -> list[float]:
    samples = []
    for query in queries:  # warm up
        session.get(url + query, timeout=60, **kwargs).raise_for_status()
    for _ in range(repeats):
        for query in queries:
            start = time.perf_counter()
            response = session.get(url + query, timeout=60, **kwargs)
            samples.append(time.perf_counter() - start)
            response.raise_for_status()
    return samples


def bench_imaging(quick: bool = False, *, log=print) -> tuple[list[tuple[str, float, float, str]], list[str]]:
    import requests

    from benchmarks.__main__ import STATE, spawn, wait_http
    from benchmarks.storage import free_port

    if not Path(ORTHANC).exists() or not Path(DICOMWEB_PLUGIN).exists() or not shutil.which("storescu"):
        return [], ["", "## DICOM", "", "Not measured: install `orthanc orthanc-dicomweb dcmtk` (Debian)."]
    sizes = QUICK if quick else FULL
    work = STATE / "imaging"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    log("imaging: making test data")
    stow_set = [blob for _, blob in instances(1, sizes["ingest"], sizes["series"])]
    stow_orthanc = [blob for _, blob in instances(2, sizes["ingest"], sizes["series"])]
    store_folder, store_folder_orthanc = work / "cstore-portal", work / "cstore-orthanc"
    for folder, prefix in ((store_folder, 3), (store_folder_orthanc, 4)):
        folder.mkdir()
        for sop, blob in instances(prefix, sizes["ingest"], sizes["series"]):
            (folder / f"{sop}.dcm").write_bytes(blob)
    searchable = list(search_studies(5, sizes["studies"]))

    project, token = portal_project("Benchmark DICOM")
    bearer = {"Authorization": f"Bearer {token}"}
    port, dicom_port = free_port(), free_port()
    env = {"PORTAL_DICOM_PORT": str(dicom_port), "PORTAL_DICOM_HOST": "127.0.0.1"}
    saved = os.environ.copy()
    os.environ.update(env)
    try:
        web = spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "portal.asgi:application",
                "--http",
                HTTP_PROTOCOL,
                "--port",
                str(port),
                "--workers",
                "2",
                "--log-level",
                "warning",
                "--lifespan",
                "off",
            ],
            logs / "imaging-web.log",
        )
        receiver = spawn([sys.executable, "manage.py", "dicom_receiver"], logs / "imaging-receiver.log")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    orthanc = Orthanc(work / "orthanc", log)
    base = f"http://127.0.0.1:{port}"
    results: dict[str, float] = {}
    try:
        wait_http(f"{base}/healthz")
        time.sleep(2)
        n = sizes["ingest"]
        log(f"imaging: STOW-RS of {n:,} instances (portal, Orthanc)")
        results["stow portal"] = n / stow(
            f"{base}/dicomweb/projects/{project.pk}/studies", stow_set, headers=bearer
        )
        results["stow orthanc"] = n / stow(
            f"{orthanc.url}/dicom-web/studies", stow_orthanc, auth=orthanc.auth
        )
        log(f"imaging: C-STORE of {n:,} instances (portal, Orthanc)")
        from imaging.models import Instance

        def indexed() -> int:
            return Instance.objects.filter(series__study__project=project).count()

        start = time.perf_counter()
        storescu(store_folder, dicom_port, f"PROJECT{project.pk}")
        # The receiver answers once an instance is spooled and indexes in batches: the time runs
        # until every instance is in the index, as Orthanc's has when its storescu returns.
        deadline = time.monotonic() + 300
        while indexed() < 2 * n and time.monotonic() < deadline:
            time.sleep(0.01)
        results["cstore portal"] = n / (time.perf_counter() - start)
        results["cstore orthanc"] = n / storescu(store_folder_orthanc, orthanc.dicom_port, "ORTHANC")
        if indexed() != 2 * n:
            raise RuntimeError(f"the portal indexed {indexed():,} of {2 * n:,} instances")
        orthanc_count = len(orthanc.get("/instances"))
        if orthanc_count != 2 * n:
            raise RuntimeError(f"Orthanc holds {orthanc_count:,} of {2 * n:,} instances")

        log("imaging: series metadata (WADO-RS)")
        session = requests.Session()
        session.trust_env = False
        series_path = f"/studies/{uid(1, 0)}/series/{uid(1, 0, 1)}/metadata"
        orthanc_series = f"/studies/{uid(2, 0)}/series/{uid(2, 0, 1)}/metadata"
        ours = latencies(
            session, f"{base}/dicomweb", [series_path], sizes["metadata_repeats"], headers=bearer
        )
        theirs = latencies(
            session,
            f"{orthanc.url}/dicom-web",
            [orthanc_series],
            sizes["metadata_repeats"],
            auth=orthanc.auth,
        )
        body = session.get(f"{base}/dicomweb{series_path}", headers=bearer, timeout=60).json()
        if len(body) != sizes["series"]:
            raise RuntimeError(f"series metadata has {len(body)} instances")
        results["metadata portal"], results["metadata orthanc"] = (
            statistics.median(ours),
            statistics.median(theirs),
        )

        log(f"imaging: indexing {len(searchable):,} studies for QIDO (portal, Orthanc; not timed)")
        search_project, _ = portal_project("Benchmark DICOM search")
        load_portal(search_project, searchable, work / "search")
        orthanc.post_instances(searchable)
        queries = [
            "/studies?PatientName=SMITH*&limit=100",
            f"/studies?PatientID=P{len(searchable) // 2:06d}",
            "/studies?StudyDate=20150301-20150331&limit=100",
            "/studies?ModalitiesInStudy=MR&limit=100",
            "/studies?StudyDescription=*chest*&limit=100",
            f"/studies?limit=100&offset={len(searchable) // 2}",
            "/studies?AccessionNumber=A0000042",
        ]
        # The portal searches only this project's studies for its token's user (and the other
        # benchmark project's); Orthanc searches all it holds (the same studies plus 4,000 more).
        ours = latencies(session, f"{base}/dicomweb", queries, sizes["repeats"], headers=bearer)
        theirs = latencies(session, f"{orthanc.url}/dicom-web", queries, sizes["repeats"], auth=orthanc.auth)
        results["qido portal"], results["qido orthanc"] = statistics.median(ours), statistics.median(theirs)
        results["qido portal p95"] = statistics.quantiles(ours, n=20)[-1]
        results["qido orthanc p95"] = statistics.quantiles(theirs, n=20)[-1]
    finally:
        orthanc.stop()
        for process in (web, receiver):
            process.terminate()
        for process in (web, receiver):
            process.wait(timeout=30)

    r = results
    rows = [
        (
            f"DICOM STOW-RS ingest, {n:,} instances (instances/s)",
            r["stow portal"],
            r["stow orthanc"],
            "Orthanc + DICOMweb plugin, same data",
        ),
        (
            f"DICOM C-STORE ingest, {n:,} instances (instances/s)",
            r["cstore portal"],
            r["cstore orthanc"],
            "Orthanc's DICOM server, same data",
        ),
        (
            f"QIDO-RS study search, {len(searchable):,} studies, median (ms)",
            r["qido portal"] * 1000,
            r["qido orthanc"] * 1000,
            "Orthanc DICOMweb, same studies",
        ),
        (
            f"WADO-RS metadata, {sizes['series']:,}-instance series (ms)",
            r["metadata portal"] * 1000,
            r["metadata orthanc"] * 1000,
            "Orthanc DICOMweb, same series",
        ),
    ]
    section = [
        "",
        "## DICOM",
        "",
        f"Ingest of {n:,} instances (CT_small.dcm copies, 39 KB each, {n // sizes['series']} studies of one "
        f"{sizes['series']:,}-instance series); QIDO over {len(searchable):,} one-instance studies; Orthanc "
        "from Debian (SQLite index, files on the same disk) on loopback. STOW-RS: 50 instances per request, "
        "4 at a time; C-STORE: DCMTK storescu, one association, TCP_NODELAY=1 for storescu and Orthanc "
        "(else DCMTK waits ~40 ms per instance for delayed ACKs), the portal timed until every instance is "
        "in its index.",
        "",
        "| Measure | Portal | Orthanc | Ratio | Target |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| STOW-RS ingest (instances/s) | {r['stow portal']:.0f} | {r['stow orthanc']:.0f} "
        f"| {r['stow portal'] / r['stow orthanc']:.2f} | ≥ 1 |",
        f"| C-STORE ingest (instances/s) | {r['cstore portal']:.0f} | {r['cstore orthanc']:.0f} "
        f"| {r['cstore portal'] / r['cstore orthanc']:.2f} | ≥ 1 |",
        f"| QIDO-RS study search, median (ms) | {r['qido portal'] * 1000:.1f} "
        f"| {r['qido orthanc'] * 1000:.1f} "
        f"| {r['qido orthanc'] / r['qido portal']:.2f} | ≤ 50 ms |",
        f"| QIDO-RS study search, p95 (ms) | {r['qido portal p95'] * 1000:.1f} "
        f"| {r['qido orthanc p95'] * 1000:.1f} | | |",
        f"| WADO-RS series metadata, {sizes['series']:,} instances (ms) | {r['metadata portal'] * 1000:.0f} "
        f"| {r['metadata orthanc'] * 1000:.0f} | {r['metadata orthanc'] / r['metadata portal']:.2f} "
        "| ≤ 1,000 ms |",
        "",
        "Ratios are the portal's speed over Orthanc's (for latencies: Orthanc's time over the portal's).",
    ]
    return rows, section


def main() -> int:
    from benchmarks.__main__ import run_alone

    return run_alone(bench_imaging)


if __name__ == "__main__":
    sys.exit(main())
