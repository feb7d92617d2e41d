"""Models of the pathology app, re-exported here."""

from pathology.models.ai import Inference, InferenceState, ModelVersion, ModelVersionQuerySet
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
