"""DICOM studies: ingest, de-identification, DICOMweb and viewer."""

from django.apps import AppConfig


class ImagingConfig(AppConfig):
    """App configuration; signals and registrations are wired in `ready()`."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "imaging"
    verbose_name = "Imaging"
