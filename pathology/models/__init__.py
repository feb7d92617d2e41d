"""Models of the pathology app, re-exported here."""

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
    "Annotation",
    "AnnotationKind",
    "IngressSighting",
    "Pyramid",
    "Slide",
    "SlideQuerySet",
    "SlideState",
]
