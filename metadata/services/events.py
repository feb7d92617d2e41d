"""Appending events in batches, undoing a batch, redacting a value; the only ways values change."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import Q
from django.db.models.base import ModelState

from metadata.models import Entity, Event, EventKind, Project, ProjectProperty
from metadata.services.matrix import cached_current_values, rebuild_rows, record_batch
from metadata.services.values import normalize_value, validation_message
from portal.services.audit import record_audit_event
from portal.services.realtime import publish

# Batches larger than this are announced by a summary; clients reload the sheet.
LIVE_EVENT_LIMIT = 500
ADVISORY_LOCK_NAMESPACE = 7301  # pg_advisory_xact_lock(namespace, project id): one writer at a time


class EventError(Exception):
    """A batch that cannot be written; `errors` maps positions in the batch to messages."""

    def __init__(self, message: str, errors: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.errors = errors or {}


@dataclass
class Change:
    entity: Entity
    column: ProjectProperty
    value: object


@dataclass
class BatchResult:
    batch: uuid.UUID | None
    timestamp: dt.datetime | None
    events: list[Event] = field(default_factory=list)
    unchanged: int = 0
    conflicts: list[dict] = field(default_factory=list)


def project_group(project_id: int) -> str:
    return f"metadata.project.{project_id}"


def resolve_changes(project: Project, raw: list[dict]) -> list[Change]:
    """Check that each change names an entity of the project and a column of its kind.

    `raw` items: {"entity": id or mnemonic, "property": key, "value": any}. Raises EventError with
    per-item messages; nothing is written.
    """
    if not raw:
        raise EventError("The batch has no changes.")
    ids = {
        c.get("entity")
        for c in raw
        if isinstance(c.get("entity"), int) and not isinstance(c.get("entity"), bool)
    }
    mnemonics = {c.get("entity") for c in raw if isinstance(c.get("entity"), str)}
    entities = {}
    for entity in Entity.objects.filter(
        Q(pk__in=ids) | Q(mnemonic__in=mnemonics), project=project
    ).select_related("kind"):
        entities[entity.pk] = entities[entity.mnemonic] = entity
    columns = {
        (c.entity_kind_id, c.property.key): c
        for c in ProjectProperty.objects.filter(project=project).select_related("property")
    }
    changes, errors = [], {}
    for position, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) - {"entity", "property", "value"}:
            errors[str(position)] = ['Each change is {"entity": …, "property": …, "value": …}.']
            continue
        entity = entities.get(item.get("entity"))
        if entity is None:
            errors[str(position)] = [f"No row {item.get('entity')!r} in this project."]
            continue
        column = columns.get((entity.kind_id, item.get("property")))
        if column is None:
            errors[str(position)] = [f"{entity.kind.label} rows have no column {item.get('property')!r}."]
            continue
        changes.append(Change(entity, column, normalize_value(column.property, item.get("value"))))
    if errors:
        raise EventError("Some changes name rows or columns that do not exist; nothing was saved.", errors)
    return changes


def _lock_project(project_id: int) -> dt.datetime:
    """Serialize writers of one project; returns a timestamp later than every committed batch."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_LOCK_NAMESPACE, project_id])
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def current_values(
    project: Project, cells: set[tuple[int, int]], *, before: dt.datetime | None = None
) -> dict[tuple[int, int], object]:
    """The latest stored value of each (entity id, property id) cell (strictly before `before`)."""
    if not cells:
        return {}
    entity_ids = sorted({e for e, _ in cells})
    property_ids = sorted({p for _, p in cells})
    time_filter = "AND timestamp < %s" if before is not None else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT DISTINCT ON (entity_id, property_id) entity_id, property_id, value
            FROM metadata_event
            WHERE project_id = %s AND kind = 'set' AND entity_id = ANY(%s) AND property_id = ANY(%s)
                  {time_filter}
            ORDER BY entity_id, property_id, timestamp DESC, id DESC
            """,  # noqa: S608 - only the fixed filter text is formatted in
            [project.pk, entity_ids, property_ids, *([before] if before is not None else [])],
        )
        # Django has psycopg hand over jsonb as text (JSONField decodes it); so do we.
        return {(e, p): json.loads(v) if v is not None else None
                for e, p, v in cursor.fetchall() if (e, p) in cells}


PER_EVENT_FIELDS = ("entity_id", "property_id", "value")


def insert_events(template: Event, changes: list[Change]) -> list[Event]:
    """Write one event per change, alike but for entity, property and value, in one INSERT.

    What `Event.objects.bulk_create` does, but the rows travel as one JSON document: preparing
    each of a large batch's values as its own SQL parameter took most of the time of an append.
    The other fields come from `template` (database defaults where it has none).
    """
    columns, values, params = [], [], []
    for model_field in Event._meta.concrete_fields:
        if model_field.primary_key or model_field.attname in PER_EVENT_FIELDS:
            continue
        value = getattr(template, model_field.attname)
        if hasattr(value, "resolve_expression"):  # left to the database default
            continue
        columns.append(model_field.column)
        values.append("%s")
        params.append(model_field.get_db_prep_save(value, connection))
    rows = json.dumps([[c.entity.pk, c.column.property_id, c.value] for c in changes])
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO metadata_event (entity_id, property_id, value, {", ".join(columns)})
            SELECT (x ->> 0)::bigint, (x ->> 1)::bigint, nullif(x -> 2, 'null'::jsonb), {", ".join(values)}
            FROM jsonb_array_elements(%s::jsonb) AS x
            RETURNING id, entity_id, property_id
            """,  # noqa: S608 - column names come from the model
            [*params, rows],
        )
        ids = {(entity_id, property_id): pk for pk, entity_id, property_id in cursor.fetchall()}
    # The instances are filled in directly: Model.__init__ would take as long as the INSERT.
    common = {f.attname: getattr(template, f.attname) for f in Event._meta.concrete_fields}
    entity_cache, property_cache = Event.entity.field.cache_name, Event.property.field.cache_name
    events = []
    for change in changes:
        entity_id, property_id = change.entity.pk, change.column.property_id
        event = Event.__new__(Event)
        event.__dict__.update(common, entity_id=entity_id, property_id=property_id, value=change.value)
        event.id = ids[(entity_id, property_id)]
        state = event._state = ModelState()
        state.adding, state.db = False, connection.alias
        state.fields_cache.update({entity_cache: change.entity, property_cache: change.column.property})
        events.append(event)
    return events


def append_events(project: Project, raw: list[dict], *, author, comment: str = "") -> BatchResult:
    """Write one batch of changes; changes to a cell's current value are left out."""
    changes = resolve_changes(project, raw)
    with transaction.atomic():
        timestamp = _lock_project(project.pk)
        latest = {}
        for change in changes:  # the last change of a cell in one batch wins
            latest[(change.entity.pk, change.column.property_id)] = change
        now = cached_current_values(project.pk, set(latest))  # we hold the lock: caches are current
        batch = uuid.uuid4()
        written = [  # an empty cell and a cleared one are alike: clearing either writes nothing
            c
            for cell, c in latest.items()
            if now.get(cell) != c.value or type(now.get(cell)) is not type(c.value)
        ]
        if not written:
            return BatchResult(batch=None, timestamp=None, unchanged=len(latest))
        template = Event(
            project=project, author=author, timestamp=timestamp, batch=batch, comment=comment[:500]
        )
        events = insert_events(template, written)
        columns = {c.column.property_id: c.column for c in latest.values()}
        record_batch(project.pk, batch, timestamp, columns)  # the matrix caches, in this transaction
        transaction.on_commit(lambda: announce(project, events, columns, author))
    return BatchResult(batch=batch, timestamp=timestamp, events=events, unchanged=len(latest) - len(events))


def announce(project: Project, events: list[Event], columns: dict, author) -> None:
    """Tell every open sheet of the project about a committed batch."""
    head = {
        "type": "metadata.batch",
        "project": project.pk,
        "batch": str(events[0].batch),
        "timestamp": events[0].timestamp.isoformat(),
        "author": getattr(author, "username", None),
        "count": len(events),
    }
    if len(events) > LIVE_EVENT_LIMIT:
        publish([project_group(project.pk)], {**head, "reload": True})
        return
    cells = []
    for event in events:
        prop = columns[event.property_id].property
        cells.append(
            {
                "entity": event.entity_id,
                "property": prop.key,
                "value": event.value,
                "invalid": validation_message(prop, event.value),
            }
        )
    publish([project_group(project.pk)], {**head, "cells": cells})


def undo_batch(project: Project, batch: uuid.UUID, *, author) -> BatchResult:
    """Write a new batch that gives each cell of `batch` its value from just before it.

    Cells changed again since are left as they are and reported as conflicts.
    """
    originals = list(
        Event.objects.filter(project=project, batch=batch, kind=EventKind.SET).select_related(
            "property", "entity"
        )
    )
    if not originals:
        raise EventError("No such batch in this project.")
    cells = {(e.entity_id, e.property_id) for e in originals}
    now = current_values(project, cells)
    # All events of a batch share its timestamp: one query finds every cell's value before it.
    earlier = current_values(project, cells, before=originals[0].timestamp)
    raw, conflicts = [], []
    for event in originals:
        cell = (event.entity_id, event.property_id)
        if now.get(cell) != event.value:
            conflicts.append({"entity": event.entity.mnemonic, "property": event.property.key})
            continue
        raw.append({"entity": event.entity_id, "property": event.property.key, "value": earlier.get(cell)})
    if not raw:
        return BatchResult(batch=None, timestamp=None, conflicts=conflicts)
    result = append_events(project, raw, author=author, comment=f"Undo of batch {batch}")
    result.conflicts = conflicts
    return result


def redact_event(event: Event, *, actor, reason: str, request=None) -> Event:
    """Remove a value entered by mistake (e.g. personal data) from the history.

    The event keeps its place with no value; a tombstone event and an audit event record who
    redacted it and why. The database refuses any other change to an event.
    """
    if not reason.strip():
        raise EventError("Say why the value is redacted.")
    if event.kind != EventKind.SET or event.redacted:
        raise EventError("This event has no value to redact.")
    with transaction.atomic():
        timestamp = _lock_project(event.project_id)
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('metadata.redaction', 'on', true)")
        Event.objects.filter(pk=event.pk).update(value=None, redacted=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('metadata.redaction', 'off', true)")
        tombstone = Event.objects.create(
            project_id=event.project_id,
            entity_id=event.entity_id,
            property_id=event.property_id,
            kind=EventKind.REDACTION,
            target=event,
            value=None,
            author=actor,
            timestamp=timestamp,
            comment=reason[:500],
        )
        rebuild_rows(event.project_id, [event.entity_id])  # its cached values and snapshots
        record_audit_event(
            "metadata.value_redacted",
            actor=actor,
            request=request,
            obj=event.entity,
            event=event.pk,
            property=event.property.key,
            reason=reason[:500],
        )
    event.refresh_from_db()
    return tombstone
