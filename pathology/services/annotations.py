"""Annotations as GeoJSON: points, rectangles and polygons in full-resolution pixel coordinates.

Import takes a Feature or a FeatureCollection (QuPath and other tools export these); export gives
a FeatureCollection whose features carry `label`, `kind` and the annotation's `id`.
"""

from __future__ import annotations

import math
from typing import Any

from django.db import transaction

from pathology.models import Annotation, AnnotationKind, Slide

MAX_FEATURES = 10_000
MAX_POINTS = 100_000


class AnnotationError(Exception):
    """GeoJSON that cannot be taken; the message names the feature and the problem."""


def _position(value: Any, where: str) -> list[float]:
    if (
        not isinstance(value, list | tuple)
        or len(value) < 2
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value[:2]
        )
    ):
        raise AnnotationError(f"{where}: a position is [x, y] with two numbers.")
    return [float(value[0]), float(value[1])]


def _is_rectangle(ring: list[list[float]]) -> bool:
    if len(ring) != 5:
        return False
    xs, ys = {p[0] for p in ring}, {p[1] for p in ring}
    return len(xs) == 2 and len(ys) == 2


def parse_feature(feature: Any, where: str = "the feature") -> tuple[str, str, dict, dict]:
    """(kind, label, geometry, properties) of one GeoJSON Feature."""
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise AnnotationError(f'{where}: a GeoJSON Feature is an object with "type": "Feature".')
    geometry = feature.get("geometry")
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise AnnotationError(f"{where}: properties are an object.")
    if not isinstance(geometry, dict):
        raise AnnotationError(f"{where}: the geometry is missing.")
    label = properties.get("label", properties.get("name", ""))
    if isinstance(label, dict):  # QuPath: {"classification": {"name": ...}}
        label = label.get("name", "")
    label = str(label or (properties.get("classification") or {}).get("name", "") or "")[:200]
    kind_wanted = properties.get("kind")
    if geometry.get("type") == "Point":
        return (
            AnnotationKind.POINT,
            label,
            {"type": "Point", "coordinates": _position(geometry.get("coordinates"), where)},
            properties,
        )
    if geometry.get("type") == "Polygon":
        rings = geometry.get("coordinates")
        if not isinstance(rings, list) or not rings or not isinstance(rings[0], list):
            raise AnnotationError(f"{where}: a Polygon's coordinates are a list of rings.")
        ring = [_position(p, where) for p in rings[0][:MAX_POINTS]]
        if len(ring) < 4 or ring[0] != ring[-1]:
            raise AnnotationError(
                f"{where}: a polygon ring has at least 4 positions and ends where it starts."
            )
        kind = (
            AnnotationKind.RECTANGLE
            if kind_wanted == "rectangle" or (kind_wanted is None and _is_rectangle(ring))
            else AnnotationKind.POLYGON
        )
        if kind == AnnotationKind.RECTANGLE and not _is_rectangle(ring):
            raise AnnotationError(f"{where}: a rectangle has 4 corners on two x and two y values.")
        return kind, label, {"type": "Polygon", "coordinates": [ring]}, properties
    raise AnnotationError(f"{where}: geometry type {geometry.get('type')!r} is not taken (Point or Polygon).")


def import_geojson(slide: Slide, data: Any, user) -> list[Annotation]:
    """Add the annotations of a Feature or FeatureCollection; all or nothing."""
    if not isinstance(data, dict):
        raise AnnotationError("Send a GeoJSON Feature or FeatureCollection (an object).")
    if data.get("type") == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise AnnotationError("A FeatureCollection has a list of features.")
    elif data.get("type") == "Feature":
        features = [data]
    else:
        raise AnnotationError('Send a GeoJSON Feature or FeatureCollection ("type" says which).')
    if len(features) > MAX_FEATURES:
        raise AnnotationError(f"At most {MAX_FEATURES:,} features at a time.")
    parsed = [parse_feature(f, f"feature {i + 1}") for i, f in enumerate(features)]
    keep = {"label", "kind", "name", "classification", "id"}
    with transaction.atomic():
        return Annotation.objects.bulk_create(
            Annotation(
                slide=slide,
                kind=kind,
                label=label,
                geometry=geometry,
                properties={k: v for k, v in properties.items() if k not in keep},
                created_by=user,
            )
            for kind, label, geometry, properties in parsed
        )


def as_feature(annotation: Annotation) -> dict:
    return {
        "type": "Feature",
        "id": annotation.pk,
        "geometry": annotation.geometry,
        "properties": {
            **annotation.properties,
            "id": annotation.pk,
            "label": annotation.label,
            "kind": annotation.kind,
            "created_by": annotation.created_by.username if annotation.created_by_id else None,
            "created_at": annotation.created_at.isoformat(),
        },
    }


def export_geojson(slide: Slide) -> dict:
    annotations = slide.annotations.select_related("created_by").order_by("id")
    return {"type": "FeatureCollection", "features": [as_feature(a) for a in annotations]}
