"""Views derived from the events: the sheet now or at any moment, a cell's history, differences."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from django.db import connection

from metadata.models import Entity, Event, EventKind, Project, ProjectProperty


@dataclass
class Matrix:
    """Entities × properties: `values[entity id][property key]`, only cells that have a value."""

    project: int
    at: dt.datetime | None
    columns: list[ProjectProperty]
    entities: list[Entity]
    values: dict[int, dict[str, object]] = field(default_factory=dict)

    def value(self, entity_id: int, key: str):
        return self.values.get(entity_id, {}).get(key)


def events_as_matrix(project: Project, at: dt.datetime | None = None) -> Matrix:
    """The project's sheet at `at` (now when None): for each cell the latest value at that time."""
    columns = list(ProjectProperty.objects.filter(project=project).select_related("property", "entity_kind"))
    entities = Entity.objects.filter(project=project).select_related("kind").order_by("kind__position", "id")
    if at is not None:
        entities = entities.filter(created_at__lte=at)
    keys = {c.property_id: c.property.key for c in columns}
    sql = """
        SELECT DISTINCT ON (entity_id, property_id) entity_id, property_id, value
        FROM metadata_event
        WHERE project_id = %s AND kind = 'set' {time_filter}
        ORDER BY entity_id, property_id, timestamp DESC, id DESC
    """
    params: list = [project.pk]
    time_filter = ""
    if at is not None:
        time_filter = "AND timestamp <= %s"
        params.append(at)
    values: dict[int, dict[str, object]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql.format(time_filter=time_filter), params)
        for entity_id, property_id, value in cursor.fetchall():
            if value is not None and property_id in keys:  # jsonb arrives as text (see Django's JSONField)
                values.setdefault(entity_id, {})[keys[property_id]] = json.loads(value)
    return Matrix(project=project.pk, at=at, columns=columns, entities=list(entities), values=values)


def cell_history(entity: Entity, property_id: int) -> list[Event]:
    """Every event of one cell, oldest first (redactions included, with who and why)."""
    return list(
        Event.objects.filter(entity=entity, property_id=property_id)
        .select_related("author")
        .order_by("timestamp", "id")
    )


def matrix_difference(project: Project, before: dt.datetime, after: dt.datetime | None = None) -> list[dict]:
    """Cells whose value differs between two moments: [{entity, mnemonic, property, before, after}]."""
    old, new = events_as_matrix(project, before), events_as_matrix(project, after)
    mnemonics = {e.pk: e.mnemonic for e in new.entities}
    changes = []
    for entity_id in sorted(set(old.values) | set(new.values)):
        old_row, new_row = old.values.get(entity_id, {}), new.values.get(entity_id, {})
        for key in sorted(set(old_row) | set(new_row)):
            if old_row.get(key) != new_row.get(key):
                changes.append(
                    {
                        "entity": entity_id,
                        "mnemonic": mnemonics.get(entity_id),
                        "property": key,
                        "before": old_row.get(key),
                        "after": new_row.get(key),
                    }
                )
    return changes


def batches(project: Project) -> list[dict]:
    """The project's batches, newest first: when, who, how many changes, comment."""
    from django.db.models import Count, Max, Min

    return list(
        Event.objects.filter(project=project, kind=EventKind.SET)
        .values("batch")
        .annotate(
            timestamp=Min("timestamp"),
            count=Count("id"),
            author=Max("author__username"),
            comment=Max("comment"),
        )
        .order_by("-timestamp")
    )
