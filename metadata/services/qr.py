"""QR codes of entities: each encodes the entity's deep link, the absolute URL of its page.

Labels on tubes, blocks and slides carry the code; scanning it opens the entity's page, where
only project members see anything beyond the project's name.
"""

from __future__ import annotations

import io
import re

import segno
from django.http import HttpResponse
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from metadata.models import Entity

# Medium error correction survives a smudged or slightly torn label without growing the code much.
ERROR_LEVEL = "m"


def entity_path(entity: Entity) -> str:
    """The site-relative deep link of `entity` (its page)."""
    return reverse("metadata:entity-detail", args=[entity.project_id, entity.mnemonic])


def entity_url(entity: Entity, request=None) -> str:
    """The deep link of `entity`: absolute when a request tells the host, else site-relative."""
    path = entity_path(entity)
    return request.build_absolute_uri(path) if request is not None else path


def make_qr(data: str) -> segno.QRCode:
    """A regular (never micro) QR code of `data`."""
    return segno.make_qr(data, error=ERROR_LEVEL)


def qr_svg(data: str, *, scale: int = 4, border: int = 4, title: str = "") -> bytes:
    """A standalone SVG document (with XML declaration) of `data`'s QR code."""
    buffer = io.BytesIO()
    make_qr(data).save(buffer, kind="svg", scale=scale, border=border, title=title or None)
    return buffer.getvalue()


def qr_png(data: str, *, scale: int = 8, border: int = 4) -> bytes:
    """A PNG image of `data`'s QR code; scale 8 prints sharply at label size."""
    buffer = io.BytesIO()
    make_qr(data).save(buffer, kind="png", scale=scale, border=border)
    return buffer.getvalue()


def qr_svg_inline(data: str, *, scale: int = 3, border: int = 2, title: str = "") -> SafeString:
    """SVG markup to put straight into a page; sized by CSS (no width/height attributes)."""
    markup = make_qr(data).svg_inline(
        scale=scale, border=border, title=title or None, svgclass="qr", lineclass=None, omitsize=True
    )
    return mark_safe(markup)  # noqa: S308 - segno writes the markup and escapes the title


def entity_qr_response(entity: Entity, request, fmt: str, *, download: bool = False) -> HttpResponse:
    """The entity's QR code as an SVG or PNG response, for the pages and the API alike."""
    url = entity_url(entity, request)
    if fmt == "png":
        response = HttpResponse(qr_png(url), content_type="image/png")
    else:
        fmt = "svg"
        response = HttpResponse(
            qr_svg(url, title=f"QR code of {entity.mnemonic}"), content_type="image/svg+xml"
        )
    name = re.sub(r"[^A-Za-z0-9._-]", "_", entity.mnemonic)
    response["Content-Disposition"] = f'{"attachment" if download else "inline"}; filename="{name}.{fmt}"'
    response["Cache-Control"] = "private, max-age=3600"
    return response
