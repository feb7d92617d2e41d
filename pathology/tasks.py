"""Background jobs of the pathology app (thin: each calls a service).

Conversions run on the `tiles` queue; they are started by adding a slide or by the slide's
`convert/` endpoint, not through the generic jobs API.
"""

from __future__ import annotations

from celery import shared_task
from rest_framework import serializers

from pathology.services import slides
from portal.services.jobs import job_task


class ConvertParams(serializers.Serializer):
    slide = serializers.IntegerField(min_value=1)
    dataset = serializers.IntegerField(min_value=1, required=False)  # import: decrypt it first
    sealed_key = serializers.CharField(max_length=500, required=False)


@job_task(
    slides.CONVERT_KIND, label="Convert slide", queue="tiles", params=ConvertParams, generic_start=False
)
def convert_slide(job, progress, **params) -> dict:
    """Hash a slide's file, build its tile pyramid (or link an existing one of the same file) and
    read its metadata."""
    return slides.convert_slide(job, progress, **params)


@shared_task(name="pathology.scan_ingress", ignore_result=True)
def scan_ingress() -> list[int]:
    """Take the files in the ingress folder that stopped growing (run by Celery beat)."""
    from pathology.services.ingress import scan_ingress as scan

    return scan()


class InferParams(serializers.Serializer):
    inference = serializers.IntegerField(min_value=1)


@job_task(
    "pathology.infer", label="Apply a model to a slide", queue="gpu", params=InferParams, generic_start=False
)
def infer_slide(job, progress, **params) -> dict:
    """Classify every tissue patch of a slide with a model version (GPU when there is one)."""
    from pathology.ai import inference

    return inference.run(job, progress, **params)


@job_task("pathology.train", label="Train a patch classifier", queue="gpu", generic_start=False)
def train_model(job, progress, **params) -> dict:
    """Train a built-in network, or fine-tune a registered model, on the project's labelled slides
    (split by patient) and register the result."""
    from pathology.ai import train_job

    return train_job.run(job, progress, **params)
