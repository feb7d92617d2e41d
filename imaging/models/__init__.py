"""Models of the imaging app: the DICOM index (patient → study → series → instance) and ingest runs."""

from imaging.models.index import IngestRun, IngestState, Instance, Patient, Series, Study

__all__ = ["IngestRun", "IngestState", "Instance", "Patient", "Series", "Study"]
