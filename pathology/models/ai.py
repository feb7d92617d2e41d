"""Model versions of the AI registry: patch classifiers, uploaded as TorchScript or trained here,
and backbones (feature extractors, uploaded) to fine-tune into classifiers.

A `ModelVersion` belongs to a project (its members may use it, its writers add versions) and is
immutable: what was registered – the file (by SHA-256), its description and provenance – stays
as it was; a change is a new version of the same name.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from metadata.querysets import ProjectScopedQuerySet


class ModelVersionQuerySet(ProjectScopedQuerySet):
    """Project members see and use a project's models; writers add versions."""


class ModelKind(models.TextChoices):
    CLASSIFIER = "classifier", "Classifier"  # N × 3 × S × S → N × classes scores
    BACKBONE = "backbone", "Backbone"  # N × 3 × S × S → N × features; only a base for fine-tuning


class ModelVersion(models.Model):
    project = models.ForeignKey("metadata.Project", on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=100, help_text="E.g. 'lung-he-patches'; versions share it.")
    version = models.PositiveIntegerField(help_text="1, 2, … per project and name.")
    architecture = models.CharField(
        max_length=100,
        help_text="'torchscript' (uploaded), a built-in network's name, or 'fine-tuned:<base> v<n>'.",
    )
    kind = models.CharField(
        max_length=16,
        choices=ModelKind.choices,
        default=ModelKind.CLASSIFIER,
        help_text="A classifier gives class scores; a backbone gives features, only to fine-tune.",
    )
    description = models.TextField(blank=True)
    stains = models.JSONField(default=list, help_text="Stains it was trained on, e.g. ['H&E'].")
    classes = models.JSONField(
        help_text="Class labels, in the order of the model's outputs (empty for a backbone)."
    )
    features = models.PositiveIntegerField(
        null=True, blank=True, help_text="A backbone's features per patch (none for a classifier)."
    )
    patch_microns = models.FloatField(help_text="Side of a patch in microns at the slide.")
    input_size = models.PositiveIntegerField(help_text="Side of the network's input in pixels.")
    normalisation = models.JSONField(
        default=dict, help_text='Per channel {"mean": [r, g, b], "std": [r, g, b]}, inputs in 0–1.'
    )
    metrics = models.JSONField(default=dict, blank=True, help_text="E.g. accuracy on held-out data.")
    provenance = models.JSONField(
        default=dict, blank=True, help_text="Training job, slides and labels, parameters, code version."
    )
    path = models.CharField(max_length=500, help_text="The TorchScript file, relative to the data directory.")
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["project", "name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name", "version"], name="model_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise ValueError("A model version is immutable: register a new version instead.")
        super().save(*args, **kwargs)

    @property
    def full_path(self):
        from pathlib import Path

        return Path(settings.PORTAL_DATA_DIR) / self.path


class InferenceState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class InferenceQuerySet(ProjectScopedQuerySet):
    project_field = "slide__project"


class Inference(models.Model):
    """One model version applied to one slide: the class probabilities of every patch of the
    slide's tissue grid (a compact file: `services` of `pathology.ai.inference`) and a summary."""

    slide = models.ForeignKey("pathology.Slide", on_delete=models.CASCADE, related_name="inferences")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="inferences")
    job = models.ForeignKey("portal.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=16, choices=InferenceState.choices, default=InferenceState.QUEUED)
    message = models.CharField(max_length=500, blank=True)
    mpp = models.FloatField(help_text="Microns per pixel used (the slide's, or the value given).")
    device = models.CharField(max_length=32, blank=True, help_text="Where it ran: cuda or cpu.")
    patches = models.PositiveIntegerField(default=0, help_text="Patches of the grid.")
    tissue_patches = models.PositiveIntegerField(default=0, help_text="Patches showing tissue.")
    class_counts = models.JSONField(
        default=dict, blank=True, help_text="Tissue patches per most likely class."
    )
    mean_probabilities = models.JSONField(default=dict, blank=True, help_text="Mean probability per class.")
    path = models.CharField(
        max_length=500, blank=True, help_text="Per-patch results, under the data directory."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = InferenceQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.model_version} on {self.slide}"
