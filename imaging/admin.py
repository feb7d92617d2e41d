"""Admin site registrations of the DICOM index (read-only: files change only through ingest)."""

from django.contrib import admin

from imaging.models import DeidSettings, IngestRun, Instance, Patient, Pseudonym, Series, Study


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Patient)
class PatientAdmin(ReadOnly):
    list_display = ("patient_id", "name", "sex", "birth_date", "project")
    list_filter = ("project", "sex")
    search_fields = ("patient_id", "name")


@admin.register(Study)
class StudyAdmin(ReadOnly):
    list_display = (
        "study_uid",
        "study_date",
        "description",
        "patient",
        "series_count",
        "instance_count",
        "project",
    )
    list_filter = ("project", "study_date")
    search_fields = ("study_uid", "description", "accession_number", "patient__name", "patient__patient_id")


@admin.register(Series)
class SeriesAdmin(ReadOnly):
    list_display = ("series_uid", "modality", "number", "description", "instance_count", "study")
    list_filter = ("modality",)
    search_fields = ("series_uid", "description")


@admin.register(Instance)
class InstanceAdmin(ReadOnly):
    list_display = ("sop_instance_uid", "sop_class_uid", "number", "conflict", "series", "created_at")
    list_filter = ("conflict", "sop_class_uid")
    search_fields = ("sop_instance_uid", "sha256")


@admin.register(IngestRun)
class IngestRunAdmin(ReadOnly):
    list_display = (
        "source",
        "label",
        "project",
        "state",
        "accepted",
        "duplicates",
        "conflicts",
        "rejected",
        "created_at",
    )
    list_filter = ("state", "source", "project")
    search_fields = ("label", "message")


@admin.register(DeidSettings)
class DeidSettingsAdmin(admin.ModelAdmin):
    list_display = ("project", "enabled", "options", "updated_by", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("project__name",)


@admin.register(Pseudonym)
class PseudonymAdmin(ReadOnly):
    list_display = ("project", "kind", "pseudonym", "created_at")  # the original stays encrypted
    list_filter = ("kind", "project")
    search_fields = ("pseudonym",)
    exclude = ("original",)
