"""Exporting a project's sheet (now or at a past moment) and its full event history.

Sheets come as CSV, XLSX or JSON, all built from `events_as_matrix(project, at=...)`:

- CSV: UTF-8 with a BOM (so that Excel reads it as UTF-8), header `id, kind, parent, <keys…>`,
  one row per entity; the same header the import reads back. Text that a spreadsheet would run as a
  formula (starting with = + - @) is prefixed with ' (the import removes it again).
- XLSX: one sheet "Sheet" with a `kind` column (every kind of row in one table, so the file can be
  imported again as it is); headers read "Label (unit) [key]", which the import recognises by the
  key in brackets. A "Columns" sheet describes every column, an "About" sheet says what was
  exported, from which project, as of when.
- JSON: `{"project", "at", "exported_at", "columns": [...], "rows": [{id, mnemonic, kind, parent,
  values}]}`, the shape of the matrix API.

The history is every event of the project as JSON, oldest first, written to a spooled temporary
file in chunks (memory stays bounded for large projects); redacted values stay blank.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import tempfile
from dataclasses import dataclass

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from django.utils.text import slugify

from metadata.models import Entity, Event, Project, PropertyType
from metadata.services.matrix import events_as_matrix

FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "json": "application/json",
}
FORMULA_LIKE = re.compile(r"^'*[=+\-@]")  # also text that already starts with ', so that it reads back
XLSX_CELL_LIMIT = 32_767  # characters Excel keeps in one cell
HISTORY_CHUNK = 2000


@dataclass
class Export:
    """A finished export: its bytes (or file), media type and a download name."""

    content: bytes | object
    content_type: str
    filename: str


@dataclass
class Sheet:
    """The matrix flattened to a table: columns (one per property key) and rows."""

    project: Project
    at: dt.datetime | None
    columns: list[dict]
    rows: list[dict]


def matrix_sheet(project: Project, at: dt.datetime | None = None) -> Sheet:
    """The sheet at `at` (now when None) as plain columns and rows."""
    matrix = events_as_matrix(project, at=at)
    columns: dict[str, dict] = {}
    for column in matrix.columns:
        prop = column.property
        entry = columns.setdefault(
            prop.key,
            {
                "key": prop.key,
                "label": prop.label,
                "kinds": [],
                "type": prop.type,
                "unit": prop.unit,
                "description": prop.description,
                "options": [o.get("value") for o in prop.options or [] if isinstance(o, dict)],
            },
        )
        entry["kinds"].append(column.entity_kind.key)
    mnemonics = {e.pk: e.mnemonic for e in matrix.entities}
    missing = {e.parent_id for e in matrix.entities if e.parent_id and e.parent_id not in mnemonics}
    if missing:
        mnemonics.update(Entity.objects.filter(pk__in=missing).values_list("pk", "mnemonic"))
    rows = []
    for entity in matrix.entities:
        stored = matrix.values.get(entity.pk)
        values = {}
        if stored is not None:
            for key in columns:
                if key in stored and stored.get(key) is not None:
                    values[key] = stored.get(key)
        rows.append(
            {
                "id": entity.pk,
                "mnemonic": entity.mnemonic,
                "kind": entity.kind.key,
                "parent": mnemonics.get(entity.parent_id),
                "values": values,
            }
        )
    return Sheet(project=project, at=at, columns=list(columns.values()), rows=rows)


def export_matrix(project: Project, fmt: str, *, at: dt.datetime | None = None, user=None) -> Export:
    """The sheet as `fmt` (csv, xlsx or json)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    sheet = matrix_sheet(project, at)
    content = {"csv": sheet_as_csv, "xlsx": sheet_as_xlsx, "json": sheet_as_json}[fmt](sheet, user=user)
    return Export(content, FORMATS[fmt], download_name(project, "sheet", fmt, at))


def download_name(project: Project, what: str, extension: str, at: dt.datetime | None = None) -> str:
    base = slugify(project.name)[:60] or f"project-{project.pk}"
    moment = f"-at-{at.astimezone(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}" if at is not None else ""
    return f"{base}-{what}{moment}.{extension}"


def cell_text(value) -> str:
    """A value as CSV text: empty for none, true/false, JSON for lists and objects."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    text = str(value)
    if isinstance(value, str) and FORMULA_LIKE.match(text) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    return re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text) is not None


def sheet_as_csv(sheet: Sheet, user=None) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    keys = [c["key"] for c in sheet.columns]
    writer.writerow(["id", "kind", "parent", *keys])
    for row in sheet.rows:
        writer.writerow(
            [
                row["mnemonic"],
                row["kind"],
                row["parent"] or "",
                *(cell_text(row["values"].get(k)) for k in keys),
            ]
        )
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def sheet_as_json(sheet: Sheet, user=None) -> bytes:
    document = {
        "project": {"id": sheet.project.pk, "name": sheet.project.name},
        "at": sheet.at,
        "exported_at": timezone.now(),
        "columns": sheet.columns,
        "rows": sheet.rows,
    }
    return json.dumps(document, cls=DjangoJSONEncoder, ensure_ascii=False, indent=1).encode("utf-8")


def sheet_as_xlsx(sheet: Sheet, user=None) -> bytes:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Font

    workbook = Workbook(write_only=True)
    bold = Font(bold=True)

    def cell(ws, value, *, header=False):
        if isinstance(value, str):
            value = ILLEGAL_CHARACTERS_RE.sub("", value)[:XLSX_CELL_LIMIT]
        elif isinstance(value, (list, dict)):
            value = json.dumps(value, ensure_ascii=False)[:XLSX_CELL_LIMIT]
        c = WriteOnlyCell(ws, value=value)
        if isinstance(value, str) and value.startswith("="):
            c.data_type = "s"  # text, never a formula
        if header:
            c.font = bold
        return c

    types = {c["key"]: c["type"] for c in sheet.columns}
    main = workbook.create_sheet("Sheet")
    main.freeze_panes = "B2"
    headers = ["id", "kind", "parent"] + [xlsx_header(c) for c in sheet.columns]
    main.append([cell(main, h, header=True) for h in headers])
    for row in sheet.rows:
        values = [_xlsx_value(row["values"].get(c["key"]), types[c["key"]]) for c in sheet.columns]
        main.append([cell(main, v) for v in (row["mnemonic"], row["kind"], row["parent"], *values)])

    columns = workbook.create_sheet("Columns")
    columns.append(
        [
            cell(columns, h, header=True)
            for h in ("key", "label", "kinds", "type", "unit", "description", "options")
        ]
    )
    for c in sheet.columns:
        columns.append(
            [
                cell(columns, v)
                for v in (
                    c["key"],
                    c["label"],
                    ", ".join(c["kinds"]),
                    c["type"],
                    c["unit"],
                    c["description"],
                    ", ".join(str(o) for o in c["options"]),
                )
            ]
        )

    about = workbook.create_sheet("About")
    facts = [
        ("Project", sheet.project.name),
        ("Project id", sheet.project.pk),
        ("Sheet as of", sheet.at.isoformat() if sheet.at else "now (the time of export)"),
        ("Exported at", timezone.now().isoformat()),
        ("Exported by", getattr(user, "username", "") or ""),
        ("Rows", len(sheet.rows)),
    ]
    for name, value in facts:
        about.append([cell(about, name, header=True), cell(about, value)])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def xlsx_header(column: dict) -> str:
    """`Age (years) [age]`: readable, and the import finds the key in brackets."""
    unit = f" ({column['unit']})" if column["unit"] else ""
    return f"{column['label']}{unit} [{column['key']}]"


def _xlsx_value(value, kind: str):
    """Dates as real dates (when valid), everything else as stored."""
    if kind == PropertyType.DATE and isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return value
    return value


def export_history(project: Project) -> Export:
    """Every event of the project, oldest first, as JSON (in a spooled temporary file)."""
    out = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # returned open, for the response
    encoder = DjangoJSONEncoder(ensure_ascii=False)
    head = {
        "project": {"id": project.pk, "name": project.name},
        "exported_at": timezone.now(),
    }
    out.write(encoder.encode(head)[:-1].encode("utf-8") + b', "events": [\n')
    events = (
        Event.objects.filter(project=project)
        .order_by("timestamp", "id")
        .values_list(
            "id",
            "timestamp",
            "batch",
            "author__username",
            "entity_id",
            "entity__mnemonic",
            "property__key",
            "kind",
            "value",
            "redacted",
            "target_id",
            "comment",
        )
    )
    count = 0
    for (
        pk,
        timestamp,
        batch,
        author,
        entity_id,
        mnemonic,
        key,
        kind,
        value,
        redacted,
        target,
        comment,
    ) in events.iterator(chunk_size=HISTORY_CHUNK):
        item = {
            "id": pk,
            "timestamp": timestamp,
            "batch": batch,
            "author": author,
            "entity_id": entity_id,
            "entity": mnemonic,
            "property": key,
            "kind": kind,
            "value": None if redacted else value,
            "redacted": redacted,
            "target": target,
            "comment": comment,
        }
        out.write((b",\n" if count else b"") + encoder.encode(item).encode("utf-8"))
        count += 1
    out.write(f'\n], "count": {count}}}\n'.encode())
    out.seek(0)
    return Export(out, "application/json", download_name(project, "history", "json"))
