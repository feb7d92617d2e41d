"""`GET /api/v1/projects/<id>/entities/<id>/qr/?format=svg|png`: an entity's QR code.

The code encodes the entity's deep link (its page), the same image the entity page offers.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, generics
from rest_framework.renderers import JSONRenderer

from metadata.api.views import ProjectScopedMixin
from metadata.models import Entity
from metadata.services.qr import entity_qr_response

FORMATS = ("svg", "png")


class EntityQRView(ProjectScopedMixin, generics.GenericAPIView):
    """The QR code of one row, as SVG (default) or PNG; members of the project only."""

    queryset = Entity.objects.all()
    action = "qr"  # not a viewset: name the action for the project-role check

    def perform_content_negotiation(self, request, force=False):
        # `?format=` names the image format here, not a renderer; errors are always JSON.
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    @extend_schema(
        parameters=[
            OpenApiParameter("format", str, enum=list(FORMATS), description="svg (default) or png."),
            OpenApiParameter("download", bool, description="true: sent as an attachment."),
        ],
        responses={(200, "image/svg+xml"): OpenApiTypes.BINARY, (200, "image/png"): OpenApiTypes.BINARY},
    )
    def get(self, request, project_pk=None, pk=None):
        fmt = request.query_params.get("format") or "svg"
        if fmt not in FORMATS:
            raise exceptions.ValidationError({"format": ["Use svg or png."]})
        entity = self.get_object()
        download = request.query_params.get("download", "").lower() in ("1", "true", "yes")
        return entity_qr_response(entity, request, fmt, download=download)
