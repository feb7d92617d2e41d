"""DICOM studies: ingest, de-identification, DICOMweb and viewer."""

from django.apps import AppConfig


class ImagingConfig(AppConfig):
    """App configuration; signals and registrations are wired in `ready()`."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "imaging"
    verbose_name = "Imaging"

    def ready(self) -> None:
        from imaging import tasks  # noqa: F401 - job kinds register themselves on import
        from storage.services.sessions import register_upload_purpose

        register_upload_purpose("dicom", "DICOM files or archives")
