"""Models of the pathology app, re-exported here."""

from pathology.models.ai import ModelVersion, ModelVersionQuerySet
from pathology.models.slides import (
    Annotation,
    AnnotationKind,
    IngressSighting,
    Pyramid,
    Slide,
    SlideQuerySet,
    SlideState,
)

__all__ = [
    "ModelVersion",
    "ModelVersionQuerySet",
    "Annotation",
    "AnnotationKind",
    "IngressSighting",
    "Pyramid",
    "Slide",
    "SlideQuerySet",
    "SlideState",
]
