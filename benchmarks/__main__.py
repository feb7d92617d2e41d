"""Run the portal's benchmarks and write `benchmarks/report.md`.

Each figure is shown beside a reference measured in the same run on the same services:
- job round trip and throughput (a `portal.scrub` job through the Job machinery) against a bare
  Celery task that only sets a Redis key;
- API list latency (`GET /api/v1/jobs/`, 50 rows, bearer token) against `GET /api/v1/me/` with the
  same token, and that call against `/healthz`, which touches nothing;
- the derived metadata matrix (`benchmarks/metadata_matrix.py`) against folding all events in Python;
- encrypted storage (`benchmarks/storage.py`): upload, server-side download and re-key MB/s against
  the same crypto work in one process, and peak memory of the web and worker processes;
- whole-slide images (`benchmarks/pathology.py`): conversion against vips dzsave, tile serving
  (wrk) against large-image and bare views, region reads against OpenSlide;
- DICOM (`benchmarks/imaging.py`): STOW-RS and C-STORE ingest, QIDO-RS search and WADO-RS series
  metadata against Orthanc with its DICOMweb plugin;
- AI inference (`benchmarks/ai.py`): patches/s through the inference job's whole pipeline (tile
  reads, decoding, transforms, network) against the network alone on pre-made tensors, on the
  GPU when there is one.
Later issues add their own sections here.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from portal.httpserver import PROTOCOL as HTTP_PROTOCOL

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("PORTAL_BENCH_STATE", ROOT / ".portal" / "bench"))


def setup_django():
    os.environ["PORTAL_STATE_DIR"] = str(STATE)
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings.dev"
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    from portal.embedded import EmbeddedStack

    stack = EmbeddedStack(STATE / "dev")
    stack.start()
    import django

    django.setup()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    return stack


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_http(url: str, timeout: float = 60) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def wait_worker(timeout: float = 60) -> None:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(client.scan_iter(match="portal:worker:*")):
            return
        time.sleep(0.2)
    raise RuntimeError("worker did not start")


def run_alone(bench) -> int:
    """`python -m benchmarks.<one>`: one benchmark section on its own embedded services."""
    quick = "--quick" in sys.argv
    stack = setup_django()
    try:
        rows, section = bench(quick)
    finally:
        stack.stop(only_started_here=True)
    return print_section(rows, section)


def print_section(rows, section: list[str]) -> int:
    """One benchmark's rows (each beside its reference) and its report section, on stdout."""
    for name, ours, reference, what in rows:
        print(f"{name}: {ours:.1f} vs {reference:.1f} ({ours / reference:.2f}; {what})")
    print("\n".join(section))
    return 0


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def bench_jobs(rounds: int, burst: int) -> list[tuple[str, float, float, str]]:
    import redis
    from django.conf import settings
    from django.db import transaction

    from benchmarks.tasks import touch
    from portal.models import Job, User
    from portal.services.jobs import start_job

    admin, _ = User.objects.get_or_create(username="bench-admin", defaults={"is_staff": True})
    Path(settings.PORTAL_DATA_DIR).mkdir(parents=True, exist_ok=True)
    client = redis.Redis.from_url(settings.REDIS_URL)

    def job_round_trip() -> float:
        start = time.perf_counter()
        with transaction.atomic():
            job = start_job("portal.scrub", user=admin)
        while not Job.objects.filter(pk=job.pk, state="succeeded").exists():
            time.sleep(0.002)
        return time.perf_counter() - start

    def bare_round_trip() -> float:
        key = f"bench:{uuid.uuid4()}"
        start = time.perf_counter()
        touch.apply_async(args=[key], queue="default")
        while not client.exists(key):
            time.sleep(0.002)
        return time.perf_counter() - start

    job_round_trip(), bare_round_trip()  # warm up both paths
    jobs = [job_round_trip() for _ in range(rounds)]
    bare = [bare_round_trip() for _ in range(rounds)]

    start = time.perf_counter()
    with transaction.atomic():
        ids = [start_job("portal.scrub", user=admin).pk for _ in range(burst)]
    while Job.objects.filter(pk__in=ids, state="succeeded").count() < burst:
        time.sleep(0.01)
    job_rate = burst / (time.perf_counter() - start)
    keys = [f"bench:{uuid.uuid4()}" for _ in range(burst)]
    start = time.perf_counter()
    for key in keys:
        touch.apply_async(args=[key], queue="default")
    while client.exists(*keys) < burst:
        time.sleep(0.01)
    bare_rate = burst / (time.perf_counter() - start)
    return [
        ("Job round trip, median (ms)", median_ms(jobs), median_ms(bare), "bare Celery task"),
        (f"Job throughput, {burst} queued at once (jobs/s)", job_rate, bare_rate, "bare Celery tasks"),
    ]


def bench_api(base: str, requests_count: int) -> list[tuple[str, float, float, str]]:
    import requests
    from django.utils import timezone

    from portal.models import Job, User
    from portal.services.tokens import create_api_token

    admin = User.objects.get(username="bench-admin")
    if Job.objects.count() < 50:
        Job.objects.bulk_create([Job(kind="portal.scrub", created_by=admin) for _ in range(50)])
    _, secret = create_api_token(
        admin, name="bench", scopes=["read"], expires_at=timezone.now() + dt.timedelta(hours=1)
    )
    session = requests.Session()
    headers = {"Authorization": f"Bearer {secret}"}

    def timed(url: str, **kwargs) -> list[float]:
        samples = []
        for _ in range(requests_count):
            start = time.perf_counter()
            response = session.get(url, timeout=10, **kwargs)
            response.raise_for_status()
            samples.append(time.perf_counter() - start)
        return samples

    timed(f"{base}/api/v1/me/", headers=headers)
    api = timed(f"{base}/api/v1/jobs/?page_size=50", headers=headers)
    me = timed(f"{base}/api/v1/me/", headers=headers)
    health = timed(f"{base}/healthz")
    return [
        (
            "API job list, 50 rows, median (ms)",
            median_ms(api),
            median_ms(me),
            "GET /api/v1/me/ (same token, one row)",
        ),
        (
            "Authenticated API call, median (ms)",
            median_ms(me),
            median_ms(health),
            "/healthz (no middleware, no database)",
        ),
    ]


def main() -> int:
    quick = "--quick" in sys.argv
    stack = setup_django()
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = os.environ.get("PORTAL_BENCH_PORT", "8765")
    processes = [
        spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "-Q",
                "default",
                "-c",
                "2",
                "-I",
                "benchmarks.tasks",
                "--without-mingle",
                "--without-gossip",
                "-l",
                "WARNING",
            ],
            logs / "worker.log",
        ),
        spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "portal.asgi:application",
                "--http",
                HTTP_PROTOCOL,
                "--port",
                port,
                "--log-level",
                "warning",
                "--lifespan",
                "off",
            ],
            logs / "web.log",
        ),
    ]
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        wait_worker()
        rows = bench_jobs(rounds=5 if quick else 30, burst=20 if quick else 100)
        rows += bench_api(base, requests_count=20 if quick else 200)
        from benchmarks.metadata_matrix import bench_matrix

        matrix_rows, matrix_section = bench_matrix(base, quick=quick)
        rows += matrix_rows
        from benchmarks.storage import bench_storage

        storage_rows, storage_section = bench_storage(quick=quick)
        rows += storage_rows
        from benchmarks.pathology import bench_pathology

        pathology_rows, pathology_section = bench_pathology(quick=quick)
        rows += pathology_rows
        from benchmarks.imaging import bench_imaging

        imaging_rows, imaging_section = bench_imaging(quick=quick)
        rows += imaging_rows
        from benchmarks.ai import bench_ai

        ai_rows, ai_section = bench_ai(quick=quick)
        rows += ai_rows
    finally:
        for proc in processes:
            proc.terminate()
        for proc in processes:
            proc.wait(timeout=30)
        stack.stop(only_started_here=True)
    lines = [
        "# Benchmark report",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPU cores, "
        "embedded PostgreSQL and Redis on loopback, one Celery worker (2 processes), uvicorn.",
        "",
        "| Measure | Portal | Reference | Ratio | Reference is |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, ours, reference, what in rows:
        lines.append(f"| {name} | {ours:.1f} | {reference:.1f} | {ours / reference:.2f} | {what} |")
    lines += matrix_section
    lines += storage_section
    lines += pathology_section
    lines += imaging_section
    lines += ai_section
    report = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "report.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
