"""Training and inference in a real Celery worker (the `gpu` queue; the CPU here): its pool
processes are daemonic, and the patch loaders start processes of their own there; the epochs
arrive on the job while it runs; the model registered tells the textures apart on every patient.
(Here, not in pathology/tests: the session's worker would also take the jobs those tests run
in-process.)"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from metadata.tests.conftest import api, people, project, template  # noqa: F401 - fixtures
from pathology.models import Inference, ModelVersion
from pathology.tests.test_train_job import PARAMS, labelled  # noqa: F401 - the fixture
from portal.models import Job

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def wait(job_id: int, timeout: float = 300) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.is_finished:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {Job.objects.get(pk=job_id).message}")


def test_a_worker_trains_and_applies_a_model(
    celery_worker_process, service_env, api, project, labelled, settings, tmp_path  # noqa: F811
):
    # The worker reads the data directory of the test servers: the slides go there.
    data = Path(service_env["PORTAL_DATA_DIR"])
    shutil.copytree(tmp_path / "data" / "pyramids", data / "pyramids", dirs_exist_ok=True)
    settings.PORTAL_DATA_DIR = data

    response = api("writer").post(
        "/api/v1/models/train/", {"project": project.pk, **PARAMS, "batch_size": 16}, format="json"
    )
    assert response.status_code == 202, response.content
    job = wait(response.json()["id"])
    assert job.state == "succeeded", (job.error, celery_worker_process.output()[-3000:])
    assert [p["epoch"] for p in job.metrics] == list(range(1, PARAMS["epochs"] + 1))
    version = ModelVersion.objects.get(pk=job.result["model_version"])
    assert version.metrics["test_accuracy"] >= 0.9 and version.provenance["device"] in ("cpu", "cuda")

    started = api("writer").post(
        "/api/v1/inferences/", {"model_version": version.pk, "all_slides": True}, format="json"
    )
    assert started.status_code == 202, started.content
    for item in started.json():
        assert wait(item["job"]).state == "succeeded"
    assert Inference.objects.filter(model_version=version, state="done").count() == len(labelled)
    report = api("reader").get(f"/api/v1/models/{version.pk}/evaluation/").json()
    assert report["compared"] == len(labelled) and report["accuracy"] == 1.0, report
