"""Reading an uploaded CSV, TSV or XLSX file into a table of text cells, with clear errors."""


from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
import unicodedata
import warnings
from dataclasses import dataclass, field

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_ROWS = 50_000
MAX_COLUMNS = 500
MAX_XLSX_UNPACKED = 300 * 1024 * 1024  # a workbook's parts, unpacked (zip bombs)
LIST_LIMIT = 500  # items per list in a preview (totals are always given)
SAMPLE_ROWS = 50

ID, KIND, PARENT = "@id", "@kind", "@parent"
SPECIAL_TARGETS = {
    ID: "Row id (e.g. S-0001; empty: a new row)",
    KIND: "Kind of row",
    PARENT: "Parent row (e.g. P-0001)",
}
ID_ALIASES = {"id", "mnemonic", "mnemonicid", "entity", "entityid", "row", "rowid", "portalid"}
KIND_ALIASES = {"kind", "entitykind", "rowkind", "kindofrow"}
PARENT_ALIASES = {"parent", "parentid", "parentrow", "parentmnemonic", "belongsto"}
XLSX_SIGNATURE = b"PK\x03\x04"
OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # old .xls (and other Office binary files)
FORMULA_GUARD = re.compile(r"^'(?=[=+\-@])")  # exports prefix such text with ' (see exporting.py)


class ImportFileError(Exception):
    """The uploaded file cannot be read as a table; the message says why, for users."""


class ImportRequestError(Exception):
    """Options that do not fit the file or project, or nothing to import; nothing was written."""

    def __init__(self, message: str, errors: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.errors = errors or {}


class DraftNotFoundError(Exception):
    """No such draft for this user in this project (also: malformed ids, others' drafts)."""


class DraftExpiredError(DraftNotFoundError):
    """The draft is older than `DRAFT_LIFETIME` (it has been removed)."""



# --- reading files ----------------------------------------------------------------------------------


@dataclass
class Table:
    """A file read as text cells: one header row, then data rows with their row numbers."""

    headers: list[str]
    rows: list[tuple[int, list]]  # (row number as a spreadsheet shows it, cells)
    format: str  # csv | tsv | xlsx
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    empty_rows: int = 0
    notes: list[str] = field(default_factory=list)


def read_table(data: bytes, name: str = "") -> Table:
    """Read an uploaded CSV, TSV or XLSX file; raises ImportFileError with a clear message."""
    if not data or not data.strip():
        raise ImportFileError("The file is empty.")
    if len(data) > MAX_FILE_BYTES:
        raise ImportFileError(f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; split it.")
    if data.startswith(XLSX_SIGNATURE):
        return _read_xlsx(data)
    if data.startswith(OLE_SIGNATURE):
        raise ImportFileError(
            "This is an old Excel (.xls) file, which cannot be read; save it as .xlsx or CSV and upload that."
        )
    text, encoding = _decode(data)
    return _read_text(text, name, encoding)


def _decode(data: bytes) -> tuple[str, str]:
    for bom, encoding, label in (
        (codecs.BOM_UTF8, "utf-8-sig", "UTF-8 with BOM"),
        (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
        (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
    ):
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                raise ImportFileError(f"The file starts like {label} text but is not valid {label}.")
            break
    else:
        try:
            text, label = data.decode("utf-8"), "UTF-8"
        except UnicodeDecodeError:
            try:
                text, label = data.decode("cp1252"), "Windows-1252 (Latin-1)"
            except UnicodeDecodeError:  # bytes cp1252 leaves undefined; Latin-1 reads every byte
                text, label = data.decode("latin-1"), "ISO-8859-1 (Latin-1)"
    if _looks_binary(text):
        raise ImportFileError(
            "This does not look like a CSV, TSV or Excel (.xlsx) file; it may be damaged or of another kind."
        )
    return text.lstrip("\ufeff"), label


def _looks_binary(text: str) -> bool:
    sample = text[:65536]
    if "\x00" in sample:
        return True
    odd = sum(1 for c in sample if (unicodedata.category(c) == "Cc" and c not in "\t\r\n") or c == "\ufffd")
    return odd > max(2, len(sample) // 100)


def _sniff_delimiter(text: str) -> str:
    """The delimiter that splits the first lines into the most, and most regular, columns."""
    lines = [line for line in text[:65536].splitlines() if line.strip()][:30]
    best, best_score = ",", (0.0, 1)
    for delimiter in (",", ";", "\t", "|"):
        try:
            counts = [len(r) for r in csv.reader(lines, delimiter=delimiter)]
        except csv.Error:
            continue
        if not counts or counts[0] < 2:
            continue
        score = (sum(c == counts[0] for c in counts) / len(counts), counts[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _read_text(text: str, name: str, encoding: str) -> Table:
    lowered = name.lower()
    if lowered.endswith((".tsv", ".tab")):
        delimiter = "\t"
    else:
        delimiter = _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    table = Table(
        headers=[],
        rows=[],
        format="tsv" if delimiter == "\t" else "csv",
        encoding=encoding,
        delimiter=delimiter,
    )
    try:
        _fill(table, ([_text_cell(c) for c in record] for record in reader))
    except csv.Error as exc:
        raise ImportFileError(f"The file is not a well-formed CSV/TSV table (row {reader.line_num}): {exc}.")
    return table


def _text_cell(value: str):
    value = value.strip()
    return FORMULA_GUARD.sub("", value) if value else None


def _read_xlsx(data: bytes) -> Table:
    import zipfile

    import openpyxl

    try:
        unpacked = sum(item.file_size for item in zipfile.ZipFile(io.BytesIO(data)).infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        unpacked = 0  # openpyxl below says the file is damaged
    if unpacked > MAX_XLSX_UNPACKED:
        raise ImportFileError(
            f"The workbook holds more than {MAX_XLSX_UNPACKED // (1024 * 1024)} MB of data; "
            "split it or save it as CSV."
        )
    broken = (
        "The file looks like an Excel workbook (.xlsx) but cannot be read; it may be damaged or "
        "incomplete. Save it again from your spreadsheet program, or upload a CSV file."
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns about styles and extensions it skips
            workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
            try:
                if not workbook.worksheets:
                    raise ImportFileError("The workbook has no sheets.")
                sheet = workbook.worksheets[0]
                table = Table(headers=[], rows=[], format="xlsx", sheet=sheet.title)
                if len(workbook.worksheets) > 1:
                    table.notes.append(f"Only the first sheet, “{sheet.title}”, was read.")
                _fill(table, ([_xlsx_cell(c) for c in row] for row in sheet.iter_rows(values_only=True)))
            finally:
                workbook.close()
    except ImportFileError:
        raise
    except Exception:  # noqa: BLE001 - whatever openpyxl or zipfile raise, the file is unreadable
        raise ImportFileError(broken)
    return table


def _xlsx_cell(value):
    if value is None:
        return None
    if isinstance(value, str):
        return _text_cell(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time(0) else value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, (bool, int, float)):
        return value
    return str(value)


def _fill(table: Table, records) -> None:
    """Header (the first non-empty row), then data rows; empty rows are counted and skipped."""
    width = 0
    for number, cells in enumerate(records, start=1):
        if not any(c is not None for c in cells):
            if table.headers:
                table.empty_rows += 1
            continue
        if not table.headers:
            while cells and cells[-1] is None:
                cells.pop()
            if len(cells) > MAX_COLUMNS:
                raise ImportFileError(f"The file has more than {MAX_COLUMNS} columns.")
            table.headers = ["" if c is None else str(c) for c in cells]
            width = len(cells)
            continue
        if len(table.rows) >= MAX_ROWS:
            raise ImportFileError(
                f"The file has more than {MAX_ROWS:,} rows of data; split it into smaller files."
            )
        extra = [c for c in cells[width:] if c is not None]
        if extra:
            table.notes.append(f"Row {number} has more cells than the header; the extra cells are ignored.")
        cells = cells[:width] + [None] * (width - len(cells))
        table.rows.append((number, cells))
    if not table.headers:
        raise ImportFileError("The file is empty.")
    if not table.rows:
        raise ImportFileError("The file has a header row but no rows of data.")
    if len(table.notes) > 20:
        table.notes[20:] = [f"… and {len(table.notes) - 20} more rows with more cells than the header."]
