"""The DICOM index of a project: patient → study → series → instance, and the ingest runs.

Every stored instance is a file under `<data dir>/dicom/<project>/<study uid>/<series uid>/`;
the database keeps the hierarchy, the key attributes for lists and searches, and every non-bulk
attribute of each instance as DICOM JSON (`Instance.attributes`, PS3.18 F.2) for tag searches and
DICOMweb metadata. Studies belong to projects: membership is the access unit.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models

from metadata.querysets import ProjectScopedQuerySet


class PatientQuerySet(ProjectScopedQuerySet):
    pass


class StudyQuerySet(ProjectScopedQuerySet):
    pass


class SeriesQuerySet(ProjectScopedQuerySet):
    project_field = "study__project"


class InstanceQuerySet(ProjectScopedQuerySet):
    project_field = "series__study__project"


class IngestRunQuerySet(ProjectScopedQuerySet):
    pass


class Patient(models.Model):
    """A patient as the files name them (PatientID, PatientName …) within one project."""

    project = models.ForeignKey("metadata.Project", on_delete=models.CASCADE, related_name="dicom_patients")
    patient_id = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=324, blank=True)
    birth_date = models.CharField(max_length=8, blank=True)
    sex = models.CharField(max_length=16, blank=True)
    sample = models.ForeignKey(
        "metadata.Entity",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="dicom_patients",
        help_text="The metadata entity (patient) this is.",
    )

    objects = PatientQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "patient_id"], name="dicom_patient_once")]

    def __str__(self) -> str:
        return self.name or self.patient_id or f"patient {self.pk}"


class Study(models.Model):
    project = models.ForeignKey("metadata.Project", on_delete=models.CASCADE, related_name="dicom_studies")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="studies")
    study_uid = models.CharField(max_length=64)
    study_date = models.CharField(max_length=8, blank=True)
    study_time = models.CharField(max_length=16, blank=True)
    description = models.CharField(max_length=200, blank=True)
    accession_number = models.CharField(max_length=16, blank=True)
    study_id = models.CharField(max_length=16, blank=True)
    referring_physician = models.CharField(max_length=324, blank=True)
    modalities = models.JSONField(default=list, blank=True)
    series_count = models.PositiveIntegerField(default=0)
    instance_count = models.PositiveIntegerField(default=0)
    attributes = models.JSONField(default=dict, blank=True, help_text="Study-level attributes, DICOM JSON.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = StudyQuerySet.as_manager()

    class Meta:
        ordering = ["-study_date", "-id"]
        constraints = [models.UniqueConstraint(fields=["project", "study_uid"], name="dicom_study_once")]
        indexes = [models.Index(fields=["project", "study_date"])]

    def __str__(self) -> str:
        return self.description or self.study_uid


class Series(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    series_uid = models.CharField(max_length=64)
    modality = models.CharField(max_length=16, blank=True)
    number = models.IntegerField(null=True, blank=True)
    description = models.CharField(max_length=200, blank=True)
    body_part = models.CharField(max_length=64, blank=True)
    instance_count = models.PositiveIntegerField(default=0)
    attributes = models.JSONField(default=dict, blank=True, help_text="Series-level attributes, DICOM JSON.")
    quality = models.JSONField(default=list, blank=True, help_text="Findings of the quality checks.")

    objects = SeriesQuerySet.as_manager()

    class Meta:
        ordering = ["number", "id"]
        constraints = [models.UniqueConstraint(fields=["study", "series_uid"], name="dicom_series_once")]

    def __str__(self) -> str:
        return f"{self.modality} {self.description or self.series_uid}".strip()


class DicomJSONField(models.JSONField):
    """jsonb for an instance's DICOM JSON. Bulk inserts of many rows send each value as its own
    parameter: Django's faster-planning UNNEST form would send them as one text array, and
    escaping every quote of a few hundred attributes per row costs more than the insert."""

    def get_placeholder(self, value, compiler, connection):
        return "%s"


class Instance(models.Model):
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    sop_instance_uid = models.CharField(max_length=64)
    sop_class_uid = models.CharField(max_length=64)
    number = models.IntegerField(null=True, blank=True)
    transfer_syntax = models.CharField(max_length=64, blank=True)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    frames = models.PositiveIntegerField(default=1)
    path = models.CharField(max_length=500, help_text="The file, relative to the data directory.")
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    conflict = models.BooleanField(
        default=False, help_text="Another instance has this SOP Instance UID with other content."
    )
    attributes = DicomJSONField(default=dict, help_text="Every non-bulk attribute, DICOM JSON.")
    # Kept beside the attributes so that checking a series reads no instance's whole JSON.
    checked = models.JSONField(
        default=dict,
        blank=True,
        help_text="What the quality checks compare (UIDs, patient ID, orientation), by tag.",
    )
    ingest = models.ForeignKey(
        "IngestRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = InstanceQuerySet.as_manager()

    class Meta:
        ordering = ["number", "id"]
        indexes = [models.Index(fields=["sop_instance_uid"]), models.Index(fields=["series", "number"])]

    def __str__(self) -> str:
        return self.sop_instance_uid

    @property
    def full_path(self) -> Path:
        return Path(settings.PORTAL_DATA_DIR) / self.path


class IngestState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class IngestRun(models.Model):
    """One ingest (an upload, an archive, a STOW request, a network association) and its report:
    every file with what became of it (accepted, duplicate, conflict, rejected and why)."""

    project = models.ForeignKey("metadata.Project", on_delete=models.CASCADE, related_name="dicom_ingests")
    source = models.CharField(max_length=20, help_text="upload, archive, stow, network")
    label = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=10, choices=IngestState.choices, default=IngestState.QUEUED)
    accepted = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    conflicts = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    report = models.JSONField(
        default=list, blank=True, help_text="[{file, outcome, reason, sop_instance_uid}]"
    )
    message = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = IngestRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.source} {self.label}".strip()


class DeidSettings(models.Model):
    """How a project's DICOM is de-identified on ingest (PS3.15 basic profile and options)."""

    project = models.OneToOneField("metadata.Project", on_delete=models.CASCADE, related_name="deid_settings")
    enabled = models.BooleanField(default=False)
    options = models.JSONField(default=list, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.project_id}: {'on' if self.enabled else 'off'}"


class PseudonymQuerySet(ProjectScopedQuerySet):
    def restrict(self, user, action: str):
        from metadata.querysets import project_ids_for

        return self.filter(project__in=project_ids_for(user, "admin"))  # the re-identification table


class Pseudonym(models.Model):
    """One entry of a project's re-identification table: a pseudonym and its original, encrypted."""

    project = models.ForeignKey("metadata.Project", on_delete=models.CASCADE, related_name="dicom_pseudonyms")
    kind = models.CharField(max_length=10, help_text="patient or uid")
    pseudonym = models.CharField(max_length=128)
    original = models.BinaryField(help_text="AES-GCM: nonce, then ciphertext and tag.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PseudonymQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "kind", "pseudonym"], name="dicom_pseudonym_once")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.pseudonym}"
