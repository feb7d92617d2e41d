"""Models of the pathology app, re-exported here."""

from pathology.models.ai import Inference, InferenceState, ModelKind, ModelVersion, ModelVersionQuerySet
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
    "Inference",
    "InferenceState",
    "ModelKind",
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
