"""A slide from an encrypted dataset: the client sends the data key, the worker gets it sealed."""

from __future__ import annotations

import base64

import pytest

from pathology.models import Slide, SlideState
from pathology.tests.conftest import run_conversion
from portal.models import Job
from storage import crypto
from storage.models import KeyState, UserKey
from storage.tests.helpers import unwrap, upload

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def writer_key():
    return crypto.generate_private_key()


@pytest.fixture
def writers_dataset(api, people, writer_key, slide_files):
    public = writer_key.public_key()
    UserKey.objects.create(
        user=people["writer"],
        name="laptop",
        public_key=crypto.public_key_pem(public),
        fingerprint=crypto.public_key_fingerprint(public),
        state=KeyState.ACTIVE,
    )
    client = api("writer")
    mnemonic = upload(client, slide_files["aperio"].read_bytes(), "case-7.svs")
    return mnemonic, unwrap(client, mnemonic, writer_key)


def test_a_slide_from_an_encrypted_dataset(api, project, writers_dataset, slide_files, small_tiles):
    mnemonic, key = writers_dataset
    client = api("writer")
    wrong = client.post(
        "/api/v1/slides/",
        {"project": project.pk, "dataset": mnemonic, "key": base64.b64encode(b"\1" * 32).decode()},
        format="json",
    )
    assert wrong.status_code == 403 and not Slide.objects.exists()
    missing_key = client.post("/api/v1/slides/", {"project": project.pk, "dataset": mnemonic}, format="json")
    assert missing_key.status_code == 400 and "key" in missing_key.json()["errors"]
    hidden = api("owner").post(
        "/api/v1/slides/",
        {"project": project.pk, "dataset": mnemonic, "key": base64.b64encode(key).decode()},
        format="json",
    )
    assert hidden.status_code == 404  # the owner of the project was not given the dataset

    created = client.post(
        "/api/v1/slides/",
        {"project": project.pk, "dataset": mnemonic, "key": base64.b64encode(key).decode(), "name": "Case 7"},
        format="json",
    )
    assert created.status_code == 201, created.content
    slide = Slide.objects.get(pk=created.json()["id"])
    assert slide.ingress == "dataset" and slide.file_name == "case-7.svs" and slide.name == "Case 7"
    job = Job.objects.get(target_id=slide.pk, kind="pathology.convert")
    assert base64.b64encode(key).decode() not in str(job.params) and job.params["sealed_key"].startswith(
        "s1."
    )
    shown = client.get(f"/api/v1/jobs/{job.pk}/").json()["params"]
    assert shown["sealed_key"] == "(sealed)"
    run_conversion(slide)
    assert slide.state == SlideState.READY, slide.message
    assert slide.source_full_path.read_bytes() == slide_files["aperio"].read_bytes()
    assert slide.pyramid.vendor == "aperio"


def test_a_seal_that_cannot_be_opened_fails_the_slide_with_a_message(
    api, project, writers_dataset, small_tiles
):
    mnemonic, key = writers_dataset
    created = api("writer").post(
        "/api/v1/slides/",
        {"project": project.pk, "dataset": mnemonic, "key": base64.b64encode(key).decode()},
        format="json",
    )
    slide = Slide.objects.get(pk=created.json()["id"])
    job = Job.objects.get(target_id=slide.pk)
    job.params["sealed_key"] = "s1.AAAA"
    job.save(update_fields=["params"])
    run_conversion(slide)
    assert slide.state == SlideState.FAILED and "cannot be opened" in slide.message
