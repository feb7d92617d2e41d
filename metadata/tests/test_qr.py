"""QR codes of entities: valid SVG and PNG that encode the entity's deep link, on pages and the API."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
import zlib

import pytest
from django.urls import resolve

from metadata.services import qr as qr_service

pytestmark = pytest.mark.django_db

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG_NS = "{http://www.w3.org/2000/svg}"


def deep_link(project, entity) -> str:
    return f"http://testserver/projects/{project.pk}/e/{entity.mnemonic}/"


def png_chunks(data: bytes) -> dict[bytes, bytes]:
    assert data.startswith(PNG_SIGNATURE)
    chunks: dict[bytes, bytes] = {}
    pos = len(PNG_SIGNATURE)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    assert b"IEND" in chunks
    return chunks


def png_modules(data: bytes, *, scale: int, border: int) -> list[list[bool]]:
    """Read a 1-bit greyscale PNG (as segno writes it) back into QR modules: True = dark."""
    chunks = png_chunks(data)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour, interlace) == (1, 0, 0) and width == height
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = (width + 7) // 8
    rows, previous = [], bytes(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, line = line[0], bytearray(line[1:])
        if kind == 2:  # "Up" filter
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        else:
            assert kind == 0, f"PNG filter {kind} not expected from segno"
        previous = bytes(line)
        rows.append([not (line[x // 8] >> (7 - x % 8)) & 1 for x in range(width)])
    size = width // scale - 2 * border
    return [
        [rows[(border + r) * scale + scale // 2][(border + c) * scale + scale // 2] for c in range(size)]
        for r in range(size)
    ]


def expected_modules(url: str) -> list[list[bool]]:
    return [[bool(v) for v in row] for row in qr_service.make_qr(url).matrix]


# --- the service --------------------------------------------------------------------------------


def test_svg_is_a_valid_svg_document():
    svg = qr_service.qr_svg("http://testserver/projects/1/e/S-0001/", title="QR code of S-0001")
    root = ET.fromstring(svg)  # noqa: S314
    assert root.tag == f"{SVG_NS}svg"
    assert root.find(f"{SVG_NS}title").text == "QR code of S-0001"
    assert root.find(f"{SVG_NS}path") is not None


def test_png_has_signature_size_and_the_modules_of_the_url():
    url = "http://testserver/projects/7/e/P-0012/"
    png = qr_service.qr_png(url, scale=5, border=4)
    width, height = struct.unpack(">II", png_chunks(png)[b"IHDR"][:8])
    modules = len(expected_modules(url))
    assert width == height == (modules + 8) * 5
    assert png_modules(png, scale=5, border=4) == expected_modules(url)


def test_codes_are_regular_qr_with_at_least_medium_error_correction():
    code = qr_service.make_qr("S-1")  # short data would fit a micro QR, which phones read badly
    assert not code.is_micro and code.error in ("M", "Q", "H")  # segno raises it where it costs nothing


def test_inline_svg_has_no_fixed_size_and_escapes_the_title():
    markup = qr_service.qr_svg_inline("x", title='<b>"&')
    assert markup.startswith("<svg") and "width=" not in markup.split(">")[0]
    assert "&lt;b&gt;" in markup and "<b>" not in markup


# --- pages --------------------------------------------------------------------------------------



@pytest.mark.parametrize("role", ["reader", "writer", "owner", "admin"])
def test_members_get_svg_and_png(web, role, project, samples):
    entity = samples[0]
    client = web(role)
    svg = client.get(f"/projects/{project.pk}/e/{entity.mnemonic}/qr.svg")
    assert svg.status_code == 200 and svg["Content-Type"] == "image/svg+xml"
    assert svg["Content-Disposition"] == f'inline; filename="{entity.mnemonic}.svg"'
    ET.fromstring(svg.content)  # noqa: S314
    assert svg.content == qr_service.qr_svg(deep_link(project, entity), title=f"QR code of {entity.mnemonic}")
    png = client.get(f"/projects/{project.pk}/e/{entity.mnemonic}/qr.png?download=1")
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    assert png["Content-Disposition"] == f'attachment; filename="{entity.mnemonic}.png"'
    assert png_modules(png.content, scale=8, border=4) == expected_modules(deep_link(project, entity))


def test_the_encoded_url_opens_the_entity_page(web, project, samples):
    url = deep_link(project, samples[1])
    match = resolve(url.removeprefix("http://testserver"))
    assert match.view_name == "metadata:entity-detail"
    assert web("reader").get(url).status_code == 200


def test_strangers_get_no_qr_codes(web, project, samples):
    client = web("stranger")
    for suffix in ("qr.svg", "qr.png"):
        assert client.get(f"/projects/{project.pk}/e/{samples[0].mnemonic}/{suffix}").status_code == 404


def test_anonymous_users_are_sent_to_sign_in_for_qr_codes(client, project, samples):
    response = client.get(f"/projects/{project.pk}/e/{samples[0].mnemonic}/qr.svg")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(
    "path",
    ["/projects/{p}/e/NOPE-1/qr.svg", "/projects/{p}/e/S-9999/qr.png", "/projects/999999/e/S-0001/qr.svg"],
)
def test_unknown_rows_and_projects_are_404(web, project, samples, path):
    assert web("owner").get(path.format(p=project.pk)).status_code == 404


def test_entity_page_shows_the_same_code_inline(web, project, samples):
    entity = samples[0]
    html = web("reader").get(f"/projects/{project.pk}/e/{entity.mnemonic}/").content.decode()
    inline = qr_service.qr_svg_inline(
        deep_link(project, entity), scale=4, title=f"QR code of {entity.mnemonic}"
    )
    assert inline in html
    assert f'href="/projects/{project.pk}/e/{entity.mnemonic}/qr.svg?download=1"' in html
    assert f'href="/projects/{project.pk}/e/{entity.mnemonic}/qr.png?download=1"' in html


# --- API ----------------------------------------------------------------------------------------

API_STATUS = {"anonymous": 401, "stranger": 404, "reader": 200, "writer": 200, "owner": 200, "admin": 200}



@pytest.mark.parametrize("role", list(API_STATUS))
def test_api_qr_for_each_role(api, role, project, samples):
    entity = samples[2]
    url = f"/api/v1/projects/{project.pk}/entities/{entity.pk}/qr/"
    response = api(role).get(url)
    assert response.status_code == API_STATUS[role]
    if response.status_code == 200:
        assert response["Content-Type"] == "image/svg+xml"
        assert response.content == qr_service.qr_svg(
            deep_link(project, entity), title=f"QR code of {entity.mnemonic}"
        )
        png = api(role).get(url + "?format=png")
        assert png.status_code == 200 and png.content.startswith(PNG_SIGNATURE)
        assert png_modules(png.content, scale=8, border=4) == expected_modules(deep_link(project, entity))
    else:
        body = response.json()
        assert body["detail"] and body["code"]


def test_api_qr_refuses_unknown_formats_and_rows(api, project, samples, people):
    client = api("reader")
    bad = client.get(f"/api/v1/projects/{project.pk}/entities/{samples[0].pk}/qr/?format=gif")
    assert bad.status_code == 400 and bad.json()["errors"] == {"format": ["Use svg or png."]}
    missing = client.get(f"/api/v1/projects/{project.pk}/entities/999999/qr/")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_api_qr_of_a_row_of_another_project_is_404(api, project, samples, people, template):
    from metadata.services.projects import create_project

    other = create_project(name="Other", owner=people["owner"], template=template)
    response = api("owner").get(f"/api/v1/projects/{other.pk}/entities/{samples[0].pk}/qr/")
    assert response.status_code == 404


def test_api_entities_carry_their_deep_link(api, project, samples):
    client = api("reader")
    one = client.get(f"/api/v1/projects/{project.pk}/entities/{samples[0].pk}/").json()
    assert one["url"] == deep_link(project, samples[0])
    listed = client.get(f"/api/v1/projects/{project.pk}/entities/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert {row["url"] for row in rows} == {deep_link(project, e) for e in samples}
