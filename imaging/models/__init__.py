"""Models of the imaging app: the DICOM index (patient → study → series → instance) and ingest runs."""

from imaging.models.index import (
    DeidSettings,
    IngestRun,
    IngestState,
    Instance,
    Patient,
    Pseudonym,
    Series,
    Study,
)

__all__ = ["DeidSettings", "IngestRun", "IngestState", "Instance", "Patient", "Pseudonym", "Series", "Study"]
