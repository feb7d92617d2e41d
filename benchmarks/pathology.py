"""Benchmark of whole-slide images: conversion, tile serving and region reads, on one synthetic
slide (32,768 × 32,768 pixels, JPEG tiles, tissue in three regions; 8,192² with --quick).

Each figure stands beside its reference measured in the same run on the same file:

- conversion: the portal's pyramid builder (`pathology.builder`, both cores) in MP/s beside libvips'
  `dzsave` (pyvips, every core; 512-pixel JPEG tiles, Q 90, no tissue filter), and each one's peak
  memory (a process of its own, VmHWM);
- tile serving over HTTP: wrk, 16 connections, random full-resolution tissue tiles, requests/s and
  p99 latency: the portal's tile endpoint with a bearer token (access checked) beside (a) large-image
  making the same tiles from the source on the fly and (b) a bare Django view that returns the same
  blobs with no middleware, authentication or access check (`benchmarks/tileref`); all three under
  uvicorn with 2 worker processes;
- region reads: random 512 × 512 full-resolution regions through the reader class
  (`pathology.pyramid.SlidePyramid.read_region`) beside OpenSlide's `read_region` on the source,
  anywhere on the slide and within tissue.

Targets (issue): conversion ≥ 50 % of vips' throughput with peak memory ≤ 1 GiB; tiles ≥ 1.5× large-
image, ≥ 75 % of the bare view and p99 ≤ 50 ms; region reads ≥ 1× OpenSlide. Run alone:
`.venv/bin/python -m benchmarks.pathology [--quick]` (wrk from Debian's package is needed for tiles).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from portal.httpserver import PROTOCOL as HTTP_PROTOCOL

FULL = {"side": 32768, "requests_seconds": 15, "regions": 400}
QUICK = {"side": 8192, "requests_seconds": 5, "regions": 150}


def slide_blobs(side: int):
    from pathology.synthetic import Blob

    s = side / 32768
    return [
        Blob(12000 * s, 12000 * s, 9000 * s, 7000 * s, 0),
        Blob(24000 * s, 22000 * s, 6000 * s, 8000 * s, 1),
        Blob(30000 * s, 4000 * s, 1500 * s, 1500 * s, 0),
    ]


CONVERT_SCRIPT = """
import resource, sys, time, json
sys.path.insert(0, {root!r})
from pathology.builder import PyramidOptions, build_slide_pyramid
from pathology.sources import open_slide_source
source = open_slide_source({source!r})
start = time.perf_counter()
result = build_slide_pyramid(source, {target!r}, PyramidOptions(workers=2))
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "tissue": result.tissue_tiles, "background": result.background_tiles}}))
"""

VIPS_SCRIPT = """
import resource, sys, time, json, shutil
import pyvips
shutil.rmtree({target!r} + "_files", ignore_errors=True)
start = time.perf_counter()
image = pyvips.Image.new_from_file({source!r})
image.dzsave({target!r}, tile_size=512, overlap=0, suffix=".jpg[Q=90]")
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "peak_mib": peak}}))
"""


def run_json(script: str) -> dict:
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def wrk(url: str, paths_file: Path, seconds: int, header: str = "") -> dict[str, float]:
    script = paths_file.with_suffix(".lua")
    script.write_text(
        """
local paths = {}
local header = nil
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  if args[2] and args[2] ~= "" then header = args[2] end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end
request = function()
  local headers = {}
  if header then headers["Authorization"] = header end
  return wrk.format("GET", paths[math.random(#paths)], headers)
end
"""
    )
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c16",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            str(paths_file),
            header,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
    p99 = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} failed requests\n{out}")
    return {"rate": rate, "p99": p99}


def portal_slide(pyramid_path: Path, source: Path, sha: str):
    """A project, a member with a token, and a slide whose pyramid is the converted file."""
    import datetime as dt

    from django.conf import settings
    from django.utils import timezone

    from metadata.models import Project
    from metadata.services.projects import create_project
    from pathology.models import Pyramid, Slide, SlideState
    from pathology.pyramid import SlidePyramid
    from portal.models import User
    from portal.services.tokens import create_api_token

    user, _ = User.objects.get_or_create(username="bench-pathology")
    project = Project.objects.filter(name="Benchmark slides").first() or create_project(
        name="Benchmark slides", description="Generated for benchmarks.", owner=user
    )
    relative = Path("pyramids") / "bench" / pyramid_path.name
    target = Path(settings.PORTAL_DATA_DIR) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pyramid_path, target)
    with SlidePyramid(target) as reader:
        fields = {
            "path": str(relative),
            "width": reader.width,
            "height": reader.height,
            "levels": reader.level_count,
            "tile_size": reader.tile_size,
        }
    pyramid, _ = Pyramid.objects.update_or_create(sha256=sha, options_key="bench", defaults=fields)
    slide, _ = Slide.objects.update_or_create(
        project=project,
        name="benchmark slide",
        defaults={"file_name": source.name, "state": SlideState.READY, "pyramid": pyramid, "sha256": sha},
    )
    _, token = create_api_token(
        user, name="bench", scopes=["read"], expires_at=timezone.now() + dt.timedelta(hours=2)
    )
    return slide, token


def bench_pathology(
    quick: bool = False, *, log=print
) -> tuple[list[tuple[str, float, float, str]], list[str]]:
    from benchmarks.__main__ import STATE, spawn, wait_http
    from benchmarks.storage import free_port
    from pathology.pyramid import SlidePyramid
    from pathology.synthetic import write_large_slide

    sizes = QUICK if quick else FULL
    side = sizes["side"]
    work = STATE / "pathology"
    work.mkdir(parents=True, exist_ok=True)
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    logging.getLogger("pyvips").setLevel(logging.WARNING)
    source = work / f"synthetic-{side}.tif"
    if not source.exists():
        log(f"pathology: writing a synthetic {side:,}² slide")
        write_large_slide(source, side, side, slide_blobs(side))
    megapixels = side * side / 1e6

    log("pathology: converting (portal, then vips dzsave)")
    target = work / f"synthetic-{side}.pyramid"
    ours = run_json(
        CONVERT_SCRIPT.format(
            root=str(Path(__file__).resolve().parent.parent), source=str(source), target=str(target)
        )
    )
    vips = run_json(VIPS_SCRIPT.format(source=str(source), target=str(work / "dz")))
    shutil.rmtree(work / "dz_files", ignore_errors=True)

    log("pathology: region reads")
    import openslide

    reader = SlidePyramid(target)
    slide = openslide.OpenSlide(str(source))
    top = reader.level_count - 1
    rng = random.Random(7)
    tissue = sorted(reader.tissue_tiles())
    anywhere = [(rng.randrange(0, side - 512), rng.randrange(0, side - 512)) for _ in range(sizes["regions"])]
    inside = []
    for _ in range(sizes["regions"]):
        tx, ty = rng.choice(tissue)
        inside.append(
            (min(side - 512, tx * 512 + rng.randrange(512)), min(side - 512, ty * 512 + rng.randrange(512)))
        )

    def rate(read, places) -> float:
        start = time.perf_counter()
        for x, y in places:
            read(x, y)
        return len(places) / (time.perf_counter() - start)

    regions = {}
    for name, places in (("anywhere", anywhere), ("in tissue", inside)):
        regions[name] = (
            rate(lambda x, y: reader.read_region(top, x, y, 512, 512), places),
            rate(lambda x, y: slide.read_region((x, y), 0, (512, 512)), places),
        )
    reader.close()

    tiles = None
    if shutil.which("wrk"):
        log("pathology: tile serving (portal, large-image, bare view)")
        import hashlib

        sha = hashlib.sha256(source.read_bytes()[: 1 << 20]).hexdigest()
        portal_record, token = portal_slide(target, source, sha)
        env = os.environ.copy()
        port_portal, port_ref = free_port(), free_port()
        web = spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "portal.asgi:application",
                "--http",
                HTTP_PROTOCOL,
                "--port",
                str(port_portal),
                "--workers",
                "2",
                "--log-level",
                "warning",
                "--lifespan",
                "off",
            ],
            logs / "pathology-web.log",
        )
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "benchmarks.tileref.settings",
                "BENCH_PYRAMID": str(target),
                "BENCH_SOURCE": str(source),
            }
        )
        try:
            ref = spawn(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "benchmarks.tileref.asgi:application",
                    "--port",
                    str(port_ref),
                    "--workers",
                    "2",
                    "--log-level",
                    "warning",
                    "--lifespan",
                    "off",
                ],
                logs / "pathology-ref.log",
            )
        finally:
            os.environ.clear()
            os.environ.update(env)
        try:
            wait_http(f"http://127.0.0.1:{port_portal}/healthz")
            time.sleep(2)
            tile_places = [(x, y) for x, y in tissue]
            paths = {
                "portal": [f"/api/v1/slides/{portal_record.pk}/tiles/{top}/{x}/{y}" for x, y in tile_places],
                "bare": [f"/bare/{top}/{x}/{y}" for x, y in tile_places],
                "li": [f"/li/{top}/{x}/{y}" for x, y in tile_places],
                "raw": [f"/raw/{top}/{x}/{y}" for x, y in tile_places],
            }
            results = {}
            for name, base, header in (
                ("portal", f"http://127.0.0.1:{port_portal}", f"Bearer {token}"),
                ("bare", f"http://127.0.0.1:{port_ref}", ""),
                ("li", f"http://127.0.0.1:{port_ref}", ""),
                ("raw", f"http://127.0.0.1:{port_ref}", ""),
            ):
                listing = work / f"paths-{name}.txt"
                listing.write_text("\n".join(paths[name]) + "\n")
                wrk(base, listing, 2, header)  # warm up: open files, caches, pools
                results[name] = wrk(base, listing, sizes["requests_seconds"], header)
            tiles = results
        finally:
            for process in (web, ref):
                process.terminate()
            for process in (web, ref):
                process.wait(timeout=30)

    rows = [
        (
            f"Slide conversion, {side:,}² (MP/s)",
            megapixels / ours["seconds"],
            megapixels / vips["seconds"],
            "vips dzsave (pyvips), same file",
        ),
        (
            "Region reads 512², in tissue (reads/s)",
            *regions["in tissue"],
            "OpenSlide read_region on the source",
        ),
    ]
    if tiles:
        rows += [
            (
                "Tile serving, random full-resolution tiles (requests/s)",
                tiles["portal"]["rate"],
                tiles["li"]["rate"],
                "large-image making the tiles on the fly",
            ),
            (
                "Tile serving against the bare view (requests/s)",
                tiles["portal"]["rate"],
                tiles["bare"]["rate"],
                "bare Django view returning the blobs",
            ),
        ]
    section = [
        "",
        "## Whole-slide images",
        "",
        f"Synthetic slide of {side:,} × {side:,} pixels ({megapixels:,.0f} MP; generic tiled JPEG TIFF, "
        f"256-pixel tiles, three tissue regions), converted to 512-pixel tiles: {ours['tissue']:,} tissue "
        f"tiles kept, {ours['background']:,} background tiles dropped.",
        "",
        "| Measure | Portal | Reference | Ratio | Target |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| Conversion (MP/s; vips dzsave) | {megapixels / ours['seconds']:.1f} "
        f"| {megapixels / vips['seconds']:.1f} | {vips['seconds'] / ours['seconds']:.2f} | ≥ 0.50 |",
        f"| Conversion peak memory (MiB; vips) | {ours['peak_mib']:.0f} | {vips['peak_mib']:.0f} | "
        "| ≤ 1024 |",
    ]
    for name, (portal_rate, openslide_rate) in regions.items():
        section.append(
            f"| Region reads 512², {name} (reads/s; OpenSlide) | {portal_rate:.0f} | {openslide_rate:.0f} "
            f"| {portal_rate / openslide_rate:.2f} | ≥ 1 |"
        )
    if tiles:
        p, li, bare, raw = tiles["portal"], tiles["li"], tiles["bare"], tiles["raw"]
        section += [
            f"| Tiles (requests/s; large-image) | {p['rate']:.0f} | {li['rate']:.0f} "
            f"| {p['rate'] / li['rate']:.2f} | ≥ 1.5 |",
            f"| Tiles (requests/s; bare view) | {p['rate']:.0f} | {bare['rate']:.0f} "
            f"| {p['rate'] / bare['rate']:.2f} | ≥ 0.75 |",
            f"| Tiles (requests/s; bare ASGI handler, no framework) | {p['rate']:.0f} | {raw['rate']:.0f} "
            f"| {p['rate'] / raw['rate']:.2f} | |",
            f"| Tiles p99 latency (ms; large-image, bare view, bare ASGI) | {p['p99']:.1f} "
            f"| {li['p99']:.1f}, {bare['p99']:.1f}, {raw['p99']:.1f} | | ≤ 50 |",
            "",
            "wrk: 2 threads, 16 connections, random full-resolution tissue tiles; uvicorn with 2 worker "
            "processes for the portal (bearer token, access checked) and for the references. The portal "
            "answers tiles in front of Django (`pathology/tileserver.py`: who asked and their access kept "
            "for seconds, no query per tile), so it is compared with the bare Django view the issue names "
            "and with a bare ASGI handler, the limit of its own path.",
        ]
    else:
        section += ["", "Tile serving not measured: install wrk (Debian package `wrk`)."]
    return rows, section


def main() -> int:
    from benchmarks.__main__ import run_alone

    return run_alone(bench_pathology)


if __name__ == "__main__":
    sys.exit(main())
