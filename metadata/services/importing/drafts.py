"""Drafts: the uploaded file kept between preview and confirmation, and confirming it."""


from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import unicodedata
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from metadata.models import Entity, Project
from metadata.services import entities as entity_service
from metadata.services import events as event_service
from metadata.services.importing.planning import (
    Options,
    PlannedRow,
    build_plan,
)
from metadata.services.importing.reading import (
    DraftExpiredError,
    DraftNotFoundError,
    ImportRequestError,
    Table,
    read_table,
)
from portal.services.audit import record_audit_event

# --- drafts: the uploaded file between preview and confirmation ----------------------------------------

DRAFT_LIFETIME = dt.timedelta(hours=24)
MAX_OPEN_DRAFTS = 20  # per user, so that abandoned uploads cannot fill the disk


@dataclass
class Draft:
    id: uuid.UUID
    project_id: int
    user_id: int
    name: str
    size: int
    created_at: dt.datetime
    default_kind: str | None = None  # chosen at upload; options given later take precedence

    @property
    def expires_at(self) -> dt.datetime:
        return self.created_at + DRAFT_LIFETIME

    @property
    def path(self) -> Path:
        return drafts_dir() / str(self.id)

    def defaults(self, options: Options) -> Options:
        if options.default_kind is None and self.default_kind:
            return dataclasses.replace(options, default_kind=self.default_kind)
        return options

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise DraftNotFoundError("This import is no longer available; upload the file again.")

    def info(self) -> dict:
        return {
            "draft": str(self.id),
            "file": self.name,
            "size": self.size,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }


def drafts_dir() -> Path:
    return Path(settings.PORTAL_DATA_DIR) / "imports"


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _sidecar(draft_id) -> Path:
    return drafts_dir() / f"{draft_id}.json"


def _read_sidecar(path: Path) -> Draft | None:
    try:
        meta = json.loads(path.read_text())
        return Draft(
            id=uuid.UUID(meta["id"]),
            project_id=int(meta["project"]),
            user_id=int(meta["user"]),
            name=str(meta["name"]),
            size=int(meta["size"]),
            created_at=dt.datetime.fromisoformat(meta["created_at"]),
            default_kind=meta.get("default_kind") or None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove(draft_id) -> None:
    folder = drafts_dir()
    for path in (folder / str(draft_id), folder / f"{draft_id}.confirming", _sidecar(draft_id)):
        path.unlink(missing_ok=True)


def sweep_expired_drafts() -> int:
    """Remove drafts past their lifetime (and files whose sidecar is unreadable); returns how many."""
    folder = drafts_dir()
    if not folder.is_dir():
        return 0
    now, removed = timezone.now(), 0
    for sidecar in folder.glob("*.json"):
        draft = _read_sidecar(sidecar)
        if draft is None or draft.expires_at <= now:
            _remove(sidecar.stem)
            removed += 1
    return removed


def clean_file_name(name: str) -> str:
    name = os.path.basename(str(name).replace("\\", "/"))
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:200] or "upload"


def create_draft(
    project: Project, user, *, name: str, data: bytes, default_kind: str | None = None
) -> tuple[Draft, Table]:
    """Keep an uploaded file for preview; a file that cannot be read is refused and not kept."""
    name = clean_file_name(name)
    table = read_table(data, name)
    sweep_expired_drafts()
    folder = drafts_dir()
    folder.mkdir(parents=True, exist_ok=True)
    mine = [d for d in map(_read_sidecar, folder.glob("*.json")) if d is not None and d.user_id == user.pk]
    if len(mine) >= MAX_OPEN_DRAFTS:
        raise ImportRequestError(
            f"You have {len(mine)} imports waiting; confirm or cancel some of them first."
        )
    draft = Draft(
        id=uuid.uuid4(),
        project_id=project.pk,
        user_id=user.pk,
        name=name,
        size=len(data),
        created_at=timezone.now(),
        default_kind=default_kind or None,
    )
    _write_atomically(draft.path, data)
    meta = {
        "id": str(draft.id),
        "project": draft.project_id,
        "user": draft.user_id,
        "name": draft.name,
        "size": draft.size,
        "created_at": draft.created_at.isoformat(),
        "default_kind": draft.default_kind,
    }
    _write_atomically(_sidecar(draft.id), json.dumps(meta).encode())
    return draft, table


def load_draft(project: Project, draft_id, user) -> Draft:
    """The user's own draft in this project; DraftNotFoundError otherwise (also for others' drafts)."""
    try:
        draft_id = uuid.UUID(str(draft_id))
    except ValueError:
        raise DraftNotFoundError("No such import.")
    draft = _read_sidecar(_sidecar(draft_id))
    if draft is None or draft.project_id != project.pk or draft.user_id != getattr(user, "pk", None):
        raise DraftNotFoundError("No such import.")
    if draft.expires_at <= timezone.now():
        _remove(draft.id)
        raise DraftExpiredError("This import has expired; upload the file again.")
    return draft


def list_drafts(project: Project, user) -> list[Draft]:
    """The user's drafts in this project that have not expired, newest first."""
    folder, now = drafts_dir(), timezone.now()
    if not folder.is_dir():
        return []
    drafts = [
        d
        for d in map(_read_sidecar, folder.glob("*.json"))
        if d is not None and d.project_id == project.pk and d.user_id == user.pk and d.expires_at > now
    ]
    return sorted(drafts, key=lambda d: d.created_at, reverse=True)


def discard_draft(draft: Draft) -> None:
    _remove(draft.id)


def preview_draft(
    project: Project, draft: Draft, options: Options | None = None, *, table: Table | None = None
) -> dict:
    """The preview of a draft with `options`, plus the draft's details; writes nothing."""
    table = table or read_table(draft.read(), draft.name)
    plan = build_plan(project, table, draft.defaults(options or Options()))
    return {**draft.info(), **_file_facts(table), **plan.preview}


def _file_facts(table: Table) -> dict:
    return {
        "format": table.format,
        "encoding": table.encoding,
        "delimiter": table.delimiter,
        "sheet": table.sheet,
    }


@dataclass
class ImportResult:
    batch: uuid.UUID | None
    timestamp: dt.datetime | None
    created: list[Entity]
    updated: int
    written: int
    unchanged: int
    invalid: int


def confirm_draft(project: Project, draft: Draft, *, user, options: Options, request=None) -> ImportResult:
    """Create the new rows and write one batch, in one transaction; then remove the draft.

    The plan is computed afresh, so it reflects the sheet at this moment. Nothing is written when
    anything fails, and the draft is kept to try again. Claiming the draft file first makes a
    second, simultaneous confirmation of the same draft fail instead of importing twice.
    """
    claimed = draft.path.with_name(f"{draft.id}.confirming")
    try:
        os.replace(draft.path, claimed)
    except FileNotFoundError:
        raise DraftNotFoundError("This import is being confirmed already, or is no longer available.")
    try:
        table = read_table(claimed.read_bytes(), draft.name)
        plan = build_plan(project, table, draft.defaults(options))
        new_rows = [r for r in plan.rows if r.entity is None]
        updated = sum(1 for r in plan.rows if r.entity is not None and r.values)
        if not new_rows and not any(r.values for r in plan.rows):
            raise ImportRequestError(
                "Nothing to import: the file holds no new rows and no values that differ from the sheet."
            )
        with transaction.atomic():
            created = _create_rows(new_rows, user)
            changes = [
                {"entity": r.entity.pk, "property": key, "value": value}
                for r in plan.rows
                for key, value in r.values.items()
            ]
            result = None
            if changes:
                try:
                    result = event_service.append_events(
                        project, changes, author=user, comment=f"Import of {draft.name}"
                    )
                except event_service.EventError as exc:
                    raise ImportRequestError(str(exc), exc.errors)
            record_audit_event(
                "metadata.imported",
                actor=user,
                request=request,
                obj=project,
                file=draft.name,
                batch=str(result.batch) if result and result.batch else None,
                created=len(created),
                written=len(result.events) if result else 0,
            )
    except BaseException:
        os.replace(claimed, draft.path)
        raise
    claimed.unlink(missing_ok=True)
    _sidecar(draft.id).unlink(missing_ok=True)
    return ImportResult(
        batch=result.batch if result else None,
        timestamp=result.timestamp if result else None,
        created=created,
        updated=updated,
        written=len(result.events) if result else 0,
        unchanged=(result.unchanged if result else 0) + sum(r.unchanged for r in plan.rows),
        invalid=plan.preview["counts"]["invalid_cells"],
    )


def _create_rows(new_rows: list[PlannedRow], user) -> list[Entity]:
    """New entities, numbered in file order per kind; each planned row gets its entity."""
    by_kind: dict[int, list[PlannedRow]] = defaultdict(list)
    for row in new_rows:
        by_kind[row.kind.pk].append(row)
    created, with_parent = [], []
    for rows in by_kind.values():
        try:
            entities = entity_service.create_entities(rows[0].kind, len(rows), user=user)
        except entity_service.EntityError as exc:
            raise ImportRequestError(str(exc))
        for row, entity in zip(rows, entities, strict=True):
            row.entity = entity
            if row.parent is not None:
                entity.parent = row.parent
                with_parent.append(entity)
        created.extend(entities)
    if with_parent:
        Entity.objects.bulk_update(with_parent, ["parent"])
    return created
