"""Views derived from the events: the sheet now or at any moment, a cell's history, differences.

The events are the truth, but folding millions of them for every sheet takes seconds, so sheets
are read from caches kept in step with the events (`metadata/models/cache.py`):

- now: each row's `RowState.state`, JSON text that is handed on as it is wherever the project's
  columns allow and decoded row by row only when a value is looked at;
- at a past moment: each row's latest `RowSnapshot` up to then, plus the changes of its tail up to
  then (fewer than `SNAPSHOT_EVERY` per row).

`record_batch` (called by `append_events` inside its transaction) and `rebuild_rows` (redaction)
keep the caches in step; `rebuild_matrix_cache` derives them from the events alone (migration
0004, `manage.py rebuild_matrix_cache`). Both produce the same text for the same events.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from itertools import repeat
from operator import itemgetter
from typing import NamedTuple

from django.db import connection

from metadata.models import Entity, EntityKind, Event, EventKind, MatrixCache, Project, ProjectProperty

# A row gets a snapshot each time its count of events passes a multiple of this (and at its
# first batch), so a past sheet folds fewer than this many changes per row. Measured on 10,000
# rows × 100 columns with 2,000,000 events: 16 gives 130,000 snapshots (327 MB) for a past sheet
# of 26 MB to read, 32 gives 70,000 (215 MB) for 30 MB, 64 gives 40,000 (146 MB) for 39 MB.
SNAPSHOT_EVERY = 32

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def microseconds(moment: dt.datetime) -> int:
    """Microseconds since 1970 (the time stamps in snapshot tails)."""
    return (moment - EPOCH) // dt.timedelta(microseconds=1)


# One change in a snapshot's tail: [microseconds since 1970, property id, value or null].
TAIL_ENTRY_SQL = (
    "'[' || (extract(epoch FROM ev.ts) * 1000000)::bigint || ',' || ev.property_id || ','"
    " || coalesce(ev.value::text, 'null') || ']'"
)


class MatrixRow(NamedTuple):
    """A row of the sheet: what it shows of an entity, and the entity's cached values text
    (`state`, and for past sheets the `tail` of changes; read them through `Matrix.values`)."""

    id: int
    mnemonic: str
    kind_id: int
    parent_id: int | None
    position: int  # of the row's kind: the sheet's order
    state: str | None
    tail: str | None


class _Keys:
    """How the JSON keys of a project's cached rows map to the keys of its current columns."""

    def __init__(self, columns: list[ProjectProperty], recorded: dict[str, int]):
        self.by_property = {c.property_id: c.property.key for c in columns}
        self.by_state_key = {
            key: self.by_property[pid] for key, pid in recorded.items() if pid in self.by_property
        }
        # Plain: every key in the cache is a current column under its current name, so cached
        # text can be served as it is.
        self.plain = all(self.by_property.get(pid) == key for key, pid in recorded.items())


class MatrixValues(Mapping):
    """`values[entity id][property key]`: the rows that have values, each decoded on first access.

    Supports everything a read-only dict does (`get`, `[]`, `in`, iteration, `len`, `items`,
    comparison with a dict); `raw(entity id)` gives a row's values as JSON text, without decoding
    wherever the cached text can be served as it is.
    """

    def __init__(
        self,
        states: dict[int, str],
        keys: _Keys,
        tails: dict[int, str] | None = None,
        until: int | None = None,
    ):
        self._states = states  # entity id -> JSON text of its values (at its snapshot)
        self._tails = tails or {}  # past sheets: entity id -> JSON list of later changes
        self._until = until  # past sheets: apply tail changes up to this (microseconds)
        self._keys = keys
        self._decoded: dict[int, dict[str, object]] = {}

    def _has_changes(self, entity_id: int) -> bool:
        """Does a change of the row's tail apply? (Its first change is early enough.)"""
        tail = self._tails.get(entity_id)
        return bool(tail) and tail != "[]" and int(tail[2 : tail.index(",")]) <= self._until  # type: ignore

    def servable(self, entity_id: int) -> str | None:
        """The cached JSON text when it is exactly the row's values (None: decode the row)."""
        state = self._states.get(entity_id)
        if state is None or not self._keys.plain or self._has_changes(entity_id):
            return None
        return state

    def _decode(self, entity_id: int) -> dict[str, object]:
        row = json.loads(self._states[entity_id])
        keys = self._keys
        if not keys.plain:
            row = {keys.by_state_key[k]: v for k, v in row.items() if k in keys.by_state_key}
        if self._has_changes(entity_id):
            for moment, property_id, value in json.loads(self._tails[entity_id]):
                if moment > self._until:  # type: ignore[operator]
                    break
                key = keys.by_property.get(property_id)
                if key is None:
                    continue
                if value is None:
                    row.pop(key, None)
                else:
                    row[key] = value
        return row

    def _row(self, entity_id: int) -> dict[str, object] | None:
        row = self._decoded.get(entity_id)
        if row is None:
            if entity_id not in self._states:
                return None
            row = self._decoded[entity_id] = self._decode(entity_id)
        return row

    def raw(self, entity_id: int) -> str:
        """The row's values as a JSON object text ("{}" when it has none)."""
        text = self.servable(entity_id)
        if text is not None:
            return text
        return json.dumps(self._row(entity_id) or {}, ensure_ascii=False)

    def __getitem__(self, entity_id: int) -> dict[str, object]:
        row = self._row(entity_id)
        if not row:
            raise KeyError(entity_id)
        return row

    def __contains__(self, entity_id: object) -> bool:
        if entity_id not in self._states:
            return False
        text = self.servable(entity_id)  # type: ignore[arg-type]
        if text is not None:
            return text != "{}"
        return bool(self._row(entity_id))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return (entity_id for entity_id in self._states if entity_id in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"MatrixValues({dict(self.items())!r})"


class Matrix:
    """Entities × properties: `values[entity id][property key]`, only cells that have a value.

    `rows` (sheet order) carry what the sheet shows of each entity; `entities` gives the same as
    model instances (one query, on first use).
    """

    def __init__(
        self,
        *,
        project: int,
        at: dt.datetime | None,
        columns: list[ProjectProperty],
        kinds: dict[int, EntityKind],
        rows: list[MatrixRow],
        values: MatrixValues,
    ):
        self.project = project
        self.at = at
        self.columns = columns
        self.kinds = kinds
        self.rows = rows
        self.values = values
        self.total = len(rows)  # all rows, also when only the first were read
        self._entities: list[Entity] | None = None

    @property
    def entities(self) -> list[Entity]:
        """The rows as model instances (with their kinds), in sheet order; one query, on first use."""
        if self._entities is None:
            found = Entity.objects.filter(project_id=self.project)
            extra = {row[0]: row[1:] for row in found.values_list("pk", "created_at", "created_by_id")}
            entities = []
            for row in self.rows:
                created_at, created_by_id = extra[row.id]
                entity = Entity(
                    id=row.id,
                    project_id=self.project,
                    kind_id=row.kind_id,
                    mnemonic=row.mnemonic,
                    parent_id=row.parent_id,
                    created_at=created_at,
                    created_by_id=created_by_id,
                )
                entity._state.adding = False
                entity._state.db = connection.alias
                entity.kind = self.kinds[row.kind_id]
                entities.append(entity)
            self._entities = entities
        return self._entities

    def value(self, entity_id: int, key: str):
        return self.values.get(entity_id, {}).get(key)


# Each row with its kind's position (the sheet's order) and its cached values.
CURRENT_SQL = """
    SELECT e.id, e.mnemonic, e.kind_id, e.parent_id, k.position, s.state, NULL
    FROM metadata_entity e
    JOIN metadata_entitykind k ON k.id = e.kind_id
    LEFT JOIN metadata_rowstate s ON s.entity_id = e.id
    WHERE e.project_id = %(project)s
"""

PAST_SQL = """
    SELECT e.id, e.mnemonic, e.kind_id, e.parent_id, k.position, s.state, s.tail
    FROM metadata_entity e
    JOIN metadata_entitykind k ON k.id = e.kind_id
    LEFT JOIN LATERAL (
        SELECT state, tail FROM metadata_rowsnapshot s
        WHERE s.entity_id = e.id AND s.taken_at <= %(at)s
        ORDER BY s.taken_at DESC LIMIT 1
    ) s ON true
    WHERE e.project_id = %(project)s AND e.created_at <= %(at)s
"""


COUNT_SQL = "SELECT count(*) FROM metadata_entity e WHERE e.project_id = %(project)s"
COUNT_PAST_SQL = COUNT_SQL + " AND e.created_at <= %(at)s"


def _recorded_keys(project_id: int) -> dict[str, int]:
    keys = MatrixCache.objects.filter(project_id=project_id).values_list("keys", flat=True).first()
    return keys or {}


def cached_current_values(project_id: int, cells: set[tuple[int, int]]) -> dict[tuple[int, int], object]:
    """The current value of each (entity id, property id) cell that has one, from the row caches.

    The caches are written in the same transaction as the events, under the project's write lock,
    so a writer holding that lock reads exactly what folding the events would give (empty cells
    are absent). Much cheaper than reading the events for a large batch.
    """
    if not cells:
        return {}
    columns = list(ProjectProperty.objects.filter(project_id=project_id).select_related("property"))
    keys = _Keys(columns, _recorded_keys(project_id))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT entity_id, state FROM metadata_rowstate WHERE project_id = %s AND entity_id = ANY(%s)",
            [project_id, sorted({e for e, _ in cells})],
        )
        values = MatrixValues(dict(cursor.fetchall()), keys)
    found = {}
    for entity_id, property_id in cells:
        row, key = values.get(entity_id), keys.by_property.get(property_id)
        if row is not None and key in row:
            found[(entity_id, property_id)] = row[key]
    return found


def events_as_matrix(project: Project, at: dt.datetime | None = None, *, limit: int | None = None) -> Matrix:
    """The project's sheet at `at` (now when None): for each cell the latest value at that time.

    Rows created after `at` are left out. Values are read from the caches and decoded lazily.
    `limit`: only the first rows in sheet order (the sheet's first screen); `Matrix.total` still
    counts them all.
    """
    columns = list(ProjectProperty.objects.filter(project=project).select_related("property", "entity_kind"))
    kinds = {kind.pk: kind for kind in EntityKind.objects.filter(project=project)}
    keys = _Keys(columns, _recorded_keys(project.pk))
    with connection.cursor() as cursor:
        params = {"project": project.pk, "at": at, "limit": limit}
        order = " ORDER BY k.position, e.id LIMIT %(limit)s" if limit is not None else ""
        cursor.execute((CURRENT_SQL if at is None else PAST_SQL) + order, params)
        # Plain tuples are fetched fastest; they become MatrixRows without a Python call per row.
        rows: list[MatrixRow] = list(map(tuple.__new__, repeat(MatrixRow), cursor.fetchall()))
        total = len(rows)
        if limit is not None:
            cursor.execute(COUNT_SQL if at is None else COUNT_PAST_SQL, params)
            total = cursor.fetchone()[0]
    rows.sort(key=itemgetter(0))  # by id, then (stable) by kind position: cheaper than one
    rows.sort(key=itemgetter(4))  # sort by (position, id), which builds a tuple per row
    if at is None:  # rows without values are left out ("{}" once all were cleared)
        states = {r.id: r.state for r in rows if r.state is not None and r.state != "{}"}
        values = MatrixValues(states, keys)
    else:
        states = {r.id: r.state for r in rows if r.state is not None}
        tails = {r.id: r.tail for r in rows if r.tail is not None and r.tail != "[]"}
        values = MatrixValues(states, keys, tails, microseconds(at))
    matrix = Matrix(project=project.pk, at=at, columns=columns, kinds=kinds, rows=rows, values=values)
    matrix.total = total
    return matrix


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
    mnemonics = {r.id: r.mnemonic for r in new.rows}
    changes = []
    for entity_id in sorted(set(old.values) | set(new.values)):
        text = old.values.servable(entity_id)
        if text is not None and text == new.values.servable(entity_id):
            continue  # the same cached text: nothing changed in this row
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


# --- keeping the caches in step ---------------------------------------------------------------


def _load_json(value):
    return json.loads(value) if isinstance(value, str | bytes) else value


def _sync_keys(cursor, project_id: int, adding: Iterable[int] = ()) -> None:
    """Make the project's cached rows use each property's current key, and record new ones.

    Renamed properties are renamed in every row state and snapshot of the project (rare, and
    done once); `adding` are property ids about to be written under their current keys.
    """
    cursor.execute("SELECT keys FROM metadata_matrixcache WHERE project_id = %s", [project_id])
    found = cursor.fetchone()
    recorded: dict[str, int] = _load_json(found[0]) if found else {}
    wanted = set(recorded.values()) | set(adding)
    if not wanted:
        return
    cursor.execute("SELECT id, key FROM metadata_property WHERE id = ANY(%s)", [sorted(wanted)])
    current = dict(cursor.fetchall())  # (a property with events cannot be deleted)
    renames = {key: current[pid] for key, pid in recorded.items() if current.get(pid, key) != key}
    if renames:
        for table in ("metadata_rowstate", "metadata_rowsnapshot"):
            cursor.execute(
                f"""
                UPDATE {table} SET state = (
                    SELECT coalesce(
                        jsonb_object_agg(coalesce(%(map)s::jsonb ->> j.key, j.key), j.value), '{{}}'
                    )
                    FROM jsonb_each(state::jsonb) j
                )::text
                WHERE project_id = %(project)s AND state::jsonb ?| %(old)s
                """,  # noqa: S608 - table names are fixed
                {"map": json.dumps(renames), "project": project_id, "old": sorted(renames)},
            )
    keys = {current[pid]: pid for pid in wanted if pid in current}
    if found is None or keys != recorded:
        cursor.execute(
            """
            INSERT INTO metadata_matrixcache (project_id, keys) VALUES (%s, %s::jsonb)
            ON CONFLICT (project_id) DO UPDATE SET keys = EXCLUDED.keys
            """,
            [project_id, json.dumps(keys)],
        )


RECORD_BATCH_SQL = f"""
WITH ev AS (
    SELECT e.id, e.entity_id, e.property_id, p.key, e.value, e.timestamp AS ts
    FROM metadata_event e JOIN metadata_property p ON p.id = e.property_id
    WHERE e.batch = %(batch)s AND e.project_id = %(project)s AND e.kind = 'set'
), d AS (
    SELECT ev.entity_id,
           coalesce(jsonb_object_agg(ev.key, ev.value) FILTER (WHERE ev.value IS NOT NULL), '{{}}') AS sets,
           coalesce(array_agg(ev.key) FILTER (WHERE ev.value IS NULL), '{{}}') AS clears,
           count(*) AS n,
           string_agg({TAIL_ENTRY_SQL}, ',' ORDER BY ev.property_id, ev.id) AS entries
    FROM ev GROUP BY ev.entity_id
), late AS (
    SELECT r.entity_id FROM metadata_rowstate r JOIN d ON d.entity_id = r.entity_id
    WHERE r.last_event_at >= %(ts)s
), upd AS (
    UPDATE metadata_rowstate r
    SET state = ((r.state::jsonb || d.sets) - d.clears)::text, event_count = r.event_count + d.n,
        last_event_at = %(ts)s, updated_at = now()
    FROM d
    WHERE r.entity_id = d.entity_id AND r.last_event_at < %(ts)s
    RETURNING r.entity_id, r.state, r.event_count - d.n AS before, r.event_count AS after, d.entries
), ins AS (
    INSERT INTO metadata_rowstate (entity_id, project_id, state, event_count, last_event_at, updated_at)
    SELECT d.entity_id, %(project)s, (d.sets - d.clears)::text, d.n, %(ts)s, now() FROM d
    WHERE NOT EXISTS (SELECT 1 FROM metadata_rowstate r WHERE r.entity_id = d.entity_id)
    RETURNING entity_id, state, event_count AS after
), changed AS (
    SELECT entity_id, state, before, after, entries FROM upd
    UNION ALL
    SELECT ins.entity_id, ins.state, 0, ins.after, d.entries FROM ins JOIN d ON d.entity_id = ins.entity_id
), snapshots AS (
    INSERT INTO metadata_rowsnapshot (entity_id, project_id, taken_at, state, tail)
    SELECT entity_id, %(project)s, %(ts)s, state, '[]' FROM changed
    WHERE before = 0 OR before / %(every)s <> after / %(every)s
), tails AS (
    UPDATE metadata_rowsnapshot s
    SET tail = CASE WHEN s.tail = '[]' THEN '[' || c.entries || ']'
                    ELSE left(s.tail, -1) || ',' || c.entries || ']' END
    FROM changed c
    WHERE NOT (c.before = 0 OR c.before / %(every)s <> c.after / %(every)s)
      AND s.entity_id = c.entity_id
      AND s.taken_at = (SELECT max(x.taken_at) FROM metadata_rowsnapshot x WHERE x.entity_id = c.entity_id)
)
SELECT coalesce(array_agg(entity_id), '{{}}') FROM late
"""  # noqa: S608 - fixed text


def record_batch(
    project_id: int, batch: uuid.UUID, timestamp: dt.datetime, property_ids: Iterable[int]
) -> None:
    """Bring the cached rows a just-written batch touched up to date, in the batch's transaction.

    Each touched row's state gets the batch's values (cleared cells removed, in one upsert for
    all rows); a row whose event count passes a multiple of SNAPSHOT_EVERY gets a snapshot, the
    others have the changes appended to their latest snapshot's tail. The caller holds the
    project's advisory lock. A row whose cache already holds a batch as late as this one (a
    clock that went back) is rebuilt from its events instead.
    """
    with connection.cursor() as cursor:
        _sync_keys(cursor, project_id, property_ids)
        cursor.execute(
            RECORD_BATCH_SQL,
            {"batch": batch, "project": project_id, "ts": timestamp, "every": SNAPSHOT_EVERY},
        )
        late = cursor.fetchone()[0]
    if late:
        rebuild_rows(project_id, late)


def _rebuild_sql(scope: str) -> str:
    """Derive states and snapshots from the events in `scope` (a condition on events `e`).

    Every join is on equal keys, so the work grows with the events, not with events × snapshots.
    """
    return f"""
    WITH ev AS MATERIALIZED (
        SELECT e.id, e.project_id, e.entity_id, e.property_id, p.key, e.timestamp AS ts, e.value,
               lead(e.timestamp) OVER (PARTITION BY e.entity_id, e.property_id ORDER BY e.timestamp, e.id)
                   AS t_next
        FROM metadata_event e JOIN metadata_property p ON p.id = e.property_id
        WHERE e.kind = 'set' AND {scope}
    ), batches AS (  -- one row per row and batch: is a snapshot taken there?
        SELECT entity_id, project_id, ts,
               after - n = 0 OR (after - n) / %(every)s <> after / %(every)s AS is_point
        FROM (
            SELECT entity_id, max(project_id) AS project_id, ts, count(*) AS n,
                   (sum(count(*)) OVER (PARTITION BY entity_id ORDER BY ts))::bigint AS after
            FROM ev GROUP BY entity_id, ts
        ) counted
    ), g AS MATERIALIZED (  -- the snapshot whose tail holds a batch, and how many snapshots so far
        SELECT *, max(CASE WHEN is_point THEN ts END) OVER w AS owner,
                  count(*) FILTER (WHERE is_point) OVER w AS points
        FROM batches WINDOW w AS (PARTITION BY entity_id ORDER BY ts)
    ), totals AS (
        SELECT entity_id, count(*) FILTER (WHERE is_point) AS points FROM g GROUP BY entity_id
    ), spans AS (  -- the snapshots (by number) that hold each value
        SELECT ev.entity_id, ev.key, ev.value,
               here.points + CASE WHEN here.is_point THEN 0 ELSE 1 END AS first,
               coalesce(after.points - CASE WHEN after.is_point THEN 1 ELSE 0 END, totals.points) AS last
        FROM ev
        JOIN g here ON here.entity_id = ev.entity_id AND here.ts = ev.ts
        LEFT JOIN g after ON after.entity_id = ev.entity_id AND after.ts = ev.t_next
        JOIN totals ON totals.entity_id = ev.entity_id
        WHERE ev.value IS NOT NULL
    ), states AS (
        SELECT spans.entity_id, number, jsonb_object_agg(spans.key, spans.value)::text AS state
        FROM spans CROSS JOIN LATERAL generate_series(spans.first, spans.last) AS number
        GROUP BY spans.entity_id, number
    ), tails AS (
        SELECT ev.entity_id, g.owner AS ts,
               '[' || string_agg({TAIL_ENTRY_SQL}, ',' ORDER BY ev.ts, ev.property_id, ev.id) || ']' AS tail
        FROM ev JOIN g ON g.entity_id = ev.entity_id AND g.ts = ev.ts
        WHERE NOT g.is_point
        GROUP BY ev.entity_id, g.owner
    ), rows AS (
        INSERT INTO metadata_rowstate (entity_id, project_id, state, event_count, last_event_at, updated_at)
        SELECT entity_id, max(project_id),
               coalesce(jsonb_object_agg(key, value) FILTER (WHERE t_next IS NULL AND value IS NOT NULL),
                        '{{}}')::text,
               count(*), max(ts), now()
        FROM ev GROUP BY entity_id
    )
    INSERT INTO metadata_rowsnapshot (entity_id, project_id, taken_at, state, tail)
    SELECT g.entity_id, g.project_id, g.ts, coalesce(s.state, '{{}}'), coalesce(t.tail, '[]')
    FROM g
    LEFT JOIN states s ON s.entity_id = g.entity_id AND s.number = g.points
    LEFT JOIN tails t ON t.entity_id = g.entity_id AND t.ts = g.ts
    WHERE g.is_point
    """  # noqa: S608 - scope is one of the fixed conditions below


def _run_rebuild(cursor, scope: str, params: dict) -> int:
    """Run the rebuild statement; returns the number of snapshots written."""
    # The CTEs carry no statistics, and a wrong guess of their sizes gets nested loops or merge
    # joins on the row alone, quadratic in the events of a row; hash joins on all the keys are
    # right at every size.
    switch = "SELECT set_config('enable_nestloop', %s, true), set_config('enable_mergejoin', %s, true)"
    cursor.execute("SELECT current_setting('enable_nestloop'), current_setting('enable_mergejoin')")
    settings = cursor.fetchone()
    cursor.execute(switch, ["off", "off"])
    try:
        cursor.execute(_rebuild_sql(scope), {**params, "every": SNAPSHOT_EVERY})
        return cursor.rowcount
    finally:
        cursor.execute(switch, settings)


def _lock_projects(cursor, project_ids: list[int] | None) -> None:
    from metadata.services.events import ADVISORY_LOCK_NAMESPACE

    if project_ids is None:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, id::int) FROM metadata_project ORDER BY id",
            [ADVISORY_LOCK_NAMESPACE],
        )
    else:
        for project_id in sorted(project_ids):
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_LOCK_NAMESPACE, project_id])


def rebuild_matrix_cache(project_ids: list[int] | None = None, *, using=None) -> dict[str, int]:
    """Derive every row state and snapshot of the projects (all when None) from their events.

    Idempotent; run inside a transaction (it takes the projects' advisory locks, so appends
    wait). `using`: the connection (a migration passes its own). Returns counts of rows written.
    """
    conn = using or connection
    if project_ids is None:
        scope, cached, params = "true", "true", {}
    else:
        scope, cached = "e.project_id = ANY(%(projects)s)", "project_id = ANY(%(projects)s)"
        params = {"projects": list(project_ids)}
    with conn.cursor() as cursor:
        _lock_projects(cursor, project_ids)
        cursor.execute("SET LOCAL work_mem = '256MB'")
        for table in ("metadata_rowsnapshot", "metadata_rowstate", "metadata_matrixcache"):
            cursor.execute(f"DELETE FROM {table} WHERE {cached}", params)  # noqa: S608 - fixed text
        snapshots = _run_rebuild(cursor, scope, params)
        cursor.execute(
            f"""
            INSERT INTO metadata_matrixcache (project_id, keys, rebuilt_at)
            SELECT u.project_id, jsonb_object_agg(p.key, p.id), now()
            FROM (SELECT DISTINCT e.project_id, e.property_id FROM metadata_event e
                  WHERE e.kind = 'set' AND {scope}) u
            JOIN metadata_property p ON p.id = u.property_id
            GROUP BY u.project_id
            """,  # noqa: S608 - scope is fixed text
            params,
        )
        cursor.execute(f"SELECT count(*) FROM metadata_rowstate WHERE {cached}", params)  # noqa: S608
        rows = cursor.fetchone()[0]
    return {"rows": rows, "snapshots": snapshots}


def rebuild_rows(project_id: int, entity_ids: Iterable[int]) -> None:
    """Derive the cached state and snapshots of some rows from their events again.

    After a redaction (the row's values before and after the redacted one change), or for rows
    a batch reached out of time order. The caller holds the project's advisory lock.
    """
    entity_ids = sorted(set(entity_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT property_id FROM metadata_event WHERE entity_id = ANY(%s)", [entity_ids]
        )
        _sync_keys(cursor, project_id, [r[0] for r in cursor.fetchall()])
        for table in ("metadata_rowsnapshot", "metadata_rowstate"):
            cursor.execute(f"DELETE FROM {table} WHERE entity_id = ANY(%s)", [entity_ids])  # noqa: S608
        _run_rebuild(cursor, "e.entity_id = ANY(%(entities)s)", {"entities": entity_ids})
