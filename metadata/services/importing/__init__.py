"""Importing CSV, TSV and XLSX files into a project's sheet, with a preview before anything is written.

An upload becomes a *draft*: the file is kept under `PORTAL_DATA_DIR/imports/<uuid>` with a small
JSON sidecar (project, user, time, original name), not in the database, and expires after
`DRAFT_LIFETIME`. The preview is computed from the file each time it is shown, so it always
reflects the sheet as it is now; confirming computes it once more with the user's column mapping
and accepted suggestions, then creates the new rows and writes one batch of events, all in one
transaction. Only the uploader may see or confirm a draft, and only in its project.

What the preview says:
- how file columns map to project columns (by key, label, spelling variants, close matches) and
  to the row id (`@id`: mnemonic such as S-0001), the kind of row (`@kind`) and the parent row
  (`@parent`); file columns that map to nothing are ignored, project columns the file lacks are
  left unchanged;
- rows that would be created or updated, cells that would change or stay as they are;
- values that do not fit their property (they are stored anyway and shown in red, as everywhere);
- suggestions for choice and option values: case and spelling variants of an option, or of a value
  already used in the project ("homo sapiens" → "Homo sapiens"), which the user may accept.

Empty cells leave stored values unchanged unless `clear_empty` is chosen.
"""

from metadata.services.importing.drafts import (
    DRAFT_LIFETIME,
    MAX_OPEN_DRAFTS,
    Draft,
    ImportResult,
    confirm_draft,
    create_draft,
    discard_draft,
    list_drafts,
    load_draft,
    preview_draft,
    sweep_expired_drafts,
)
from metadata.services.importing.planning import Options, Plan, build_plan
from metadata.services.importing.reading import (
    LIST_LIMIT,
    MAX_COLUMNS,
    MAX_FILE_BYTES,
    MAX_ROWS,
    MAX_XLSX_UNPACKED,
    DraftExpiredError,
    DraftNotFoundError,
    ImportFileError,
    ImportRequestError,
    Table,
    read_table,
)

__all__ = [
    "DRAFT_LIFETIME",
    "LIST_LIMIT",
    "MAX_COLUMNS",
    "MAX_FILE_BYTES",
    "MAX_OPEN_DRAFTS",
    "MAX_ROWS",
    "MAX_XLSX_UNPACKED",
    "DraftExpiredError",
    "DraftNotFoundError",
    "ImportFileError",
    "ImportRequestError",
    "Table",
    "read_table",
    "Options",
    "Plan",
    "build_plan",
    "Draft",
    "ImportResult",
    "confirm_draft",
    "create_draft",
    "discard_draft",
    "list_drafts",
    "load_draft",
    "preview_draft",
    "sweep_expired_drafts",
]
