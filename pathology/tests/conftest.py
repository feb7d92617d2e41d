"""Fixtures for the pathology app: small synthetic slides (made once per test session), the
metadata app's people and projects, and a way to run a slide's conversion job in the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from metadata.tests.conftest import api, people, project, samples, template, web  # noqa: F401
from pathology.synthetic import Blob, write_slide

TILE = 256

# Full-resolution pixels. A 256-pixel grid: tile (10, 1) holds the small island alone.
BIG = Blob(900, 800, 600, 500, texture=0)
STRIPES = Blob(2300, 1500, 450, 400, texture=1)
ISLAND = Blob(2688, 384, 100, 100, texture=0)
BLOBS = [BIG, STRIPES, ISLAND]


@pytest.fixture(scope="session")
def slide_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("slides")
    return {
        "generic": write_slide(folder / "tissue.tif", 3000, 2200, BLOBS, mpp=0.25),
        "aperio": write_slide(folder / "case-7.svs", 2400, 1800, [BIG, STRIPES], mpp=0.5, layout="aperio"),
    }


@pytest.fixture
def small_tiles(settings):
    settings.PATHOLOGY_TILE_SIZE = TILE
    settings.PATHOLOGY_WORKERS = 2
    return TILE


def run_conversion(slide):
    """Run the slide's latest conversion job here, as a worker would."""
    from portal.models import Job
    from portal.services.jobs import JOB_KINDS

    job = Job.objects.filter(kind="pathology.convert", target_id=slide.pk).latest("pk")
    JOB_KINDS[job.kind].task.apply(args=[job.pk])
    job.refresh_from_db()
    slide.refresh_from_db()
    return job
