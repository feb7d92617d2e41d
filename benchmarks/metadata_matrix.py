"""Benchmark of the derived metadata matrix: 10,000 samples × 100 properties, 2,000,000 events.

Each figure stands beside a naive baseline measured in the same run, folding every event of the
project in Python (the events read in time order, the last value of each cell kept):

- current matrix: the `events_as_matrix(project)` service call (values decoded lazily; a second
  row decodes every value);
- past matrix at mid-history: `events_as_matrix(project, at=...)`;
- the full matrix as JSON through the API: `GET /api/v1/projects/<p>/matrix/` with a bearer token
  through the uvicorn server the main benchmark starts (one of its own when run alone); the
  baseline is the naive fold plus DRF's JSONRenderer, in process;
- appending a 10,000-event batch with `append_events`, inside a transaction rolled back afterwards
  (the data set stays the same from run to run; the checks a commit runs, deferred constraints,
  are run and timed before the rollback; the commit's write of the log is not); the baselines are the same
  append without the cache upkeep, and the append as it was before (no caches, bulk_create).

The data set is generated in SQL once per database and reused (events cannot be deleted); the
caches are then rebuilt with the code of migration 0004 and `manage.py rebuild_matrix_cache`, and a
small project edited through `append_events` (rolled back) checks that the live path writes the
very same caches as the rebuild. Run alone: `.venv/bin/python -m benchmarks.metadata_matrix
[--quick]` (set PORTAL_BENCH_STATE to keep its database apart).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import random
import statistics
import sys
import time
from contextlib import contextmanager

from portal.httpserver import PROTOCOL as HTTP_PROTOCOL

GENERATOR_VERSION = 2
TYPES = ["text", "integer", "decimal", "date", "boolean", "choice"]
FULL = {"rows": 10_000, "columns": 100, "batches": 400, "runs": 9, "naive_runs": 3}
QUICK = {"rows": 2_000, "columns": 50, "batches": 200, "runs": 5, "naive_runs": 2}
APPEND_EVENTS = 10_000


def dataset_name(rows: int, columns: int) -> str:
    return f"Benchmark matrix {rows}x{columns} v{GENERATOR_VERSION}"


def build_dataset(rows: int, columns: int, batches: int, *, log=print):
    """A project of `rows` samples × `columns` properties with about two events per cell.

    Reused when it exists already. Generated in SQL in one transaction: each cell gets 1–3 values
    (two on average; later ones cleared one time in ten) in batches spread over 2025; rows are
    created one after another over the first quarter of the year.
    """
    from django.db import connection, transaction

    from metadata.models import EntityKind, Project, ProjectProperty, Property
    from portal.models import User

    name = dataset_name(rows, columns)
    project = Project.objects.filter(name=name).first()
    if project is not None:
        return project
    start = time.perf_counter()
    with transaction.atomic():
        owner, _ = User.objects.get_or_create(username="bench-admin", defaults={"is_staff": True})
        project = Project.objects.create(name=name, owner=owner, description="Generated for benchmarks.")
        kind = EntityKind.objects.create(project=project, key="sample", label="Sample", prefix="S")
        props = []
        for number in range(columns):
            kind_name = TYPES[number % len(TYPES)]
            prop, _ = Property.objects.update_or_create(
                key=f"b{number:03d}_{kind_name}",  # about as long as the shipped keys
                defaults={
                    "label": f"Bench {kind_name} {number}",
                    "type": kind_name,
                    "options": [{"value": f"option {i}"} for i in range(5)] if kind_name == "choice" else [],
                },
            )
            props.append(prop)
        ProjectProperty.objects.bulk_create(
            [
                ProjectProperty(project=project, property=p, entity_kind=kind, position=i)
                for i, p in enumerate(props)
            ]
        )
        params = {
            "project": project.pk,
            "kind": kind.pk,
            "owner": owner.pk,
            "rows": rows,
            "batches": batches,
            "first": dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
            "span": dt.timedelta(days=365) / batches,
            "props": [p.pk for p in props],
        }
        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO metadata_entity (project_id, kind_id, mnemonic, created_at, created_by_id)
                SELECT %(project)s, %(kind)s, 'S-' || lpad(i::text, 5, '0'),
                       %(first)s + (i * (%(batches)s / 4) / %(rows)s) * %(span)s - interval '1 second',
                       %(owner)s
                FROM generate_series(1, %(rows)s) AS i
                """,
                params,
            )
            kind.next_number = rows + 1
            kind.save(update_fields=["next_number"])
            # Cell (row i, property n) gets 1 + h % 3 values; value k lands in a batch of the k-th
            # part of the row's lifetime, so the values of a cell keep their order.
            cursor.execute(
                """
                WITH props AS (
                    SELECT row_number() OVER (ORDER BY id) - 1 AS n, id, type FROM metadata_property
                    WHERE id = ANY(%(props)s)
                ), entities AS (
                    SELECT id, row_number() OVER (ORDER BY id) AS i FROM metadata_entity
                    WHERE project_id = %(project)s
                ), cells AS (
                    SELECT r.id AS entity_id, p.id AS property_id, p.type,
                           (r.i * 7919 + p.n * 104729) %% 1000003 AS h,
                           (r.i * (%(batches)s / 4) / %(rows)s) AS born
                    FROM entities r CROSS JOIN props p
                ), placed AS (
                    SELECT c.*, k, c.born + k * ((%(batches)s - c.born) / (1 + c.h %% 3))
                               + ((c.h / 7 + k * 31) %% greatest(1, (%(batches)s - c.born) / (1 + c.h %% 3)))
                               AS b
                    FROM cells c CROSS JOIN LATERAL generate_series(0, c.h %% 3) AS k
                )
                INSERT INTO metadata_event (project_id, entity_id, property_id, kind, value, redacted,
                                            author_id, timestamp, batch, comment)
                SELECT %(project)s, entity_id, property_id, 'set',
                       CASE WHEN k > 0 AND (h + k) %% 10 = 0 THEN NULL
                            WHEN type = 'integer' THEN to_jsonb((h + k * 13) %% 1000)
                            WHEN type = 'decimal' THEN to_jsonb(round(((h + k * 17) %% 100000) / 100.0, 2))
                            WHEN type = 'date' THEN to_jsonb(to_char(
                                date '2020-01-01' + ((h + k) %% 2000)::int, 'YYYY-MM-DD'))
                            WHEN type = 'boolean' THEN to_jsonb((h + k) %% 2 = 0)
                            WHEN type = 'choice' THEN to_jsonb('option ' || ((h + k) %% 5))
                            ELSE to_jsonb('value ' || ((h * 3 + k) %% 100000))
                       END,
                       false, %(owner)s, %(first)s + b * %(span)s,
                       md5('bench batch ' || %(project)s || ' ' || b)::uuid, ''
                FROM placed
                ORDER BY b, entity_id, property_id
                """,
                params,
            )
            log(f"  generated {cursor.rowcount:,} events in {time.perf_counter() - start:.0f} s")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    log(f"  committed in {time.perf_counter() - start:.0f} s")
    return project


def naive_matrix(project, at: dt.datetime | None = None) -> dict[int, dict[str, object]]:
    """The baseline: every event of the project in time order, folded in Python."""
    from django.db import connection

    from metadata.models import Entity, ProjectProperty

    keys = {
        c.property_id: c.property.key
        for c in ProjectProperty.objects.filter(project=project).select_related("property")
    }
    shown = Entity.objects.filter(project=project)
    if at is not None:
        shown = shown.filter(created_at__lte=at)
    shown = set(shown.values_list("pk", flat=True))
    latest = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT entity_id, property_id, value FROM metadata_event"
            " WHERE project_id = %s AND kind = 'set' AND timestamp <= %s ORDER BY timestamp, id",
            [project.pk, at or dt.datetime.max.replace(tzinfo=dt.UTC)],
        )
        for entity_id, property_id, value in cursor.fetchall():
            latest[(entity_id, property_id)] = value
    values: dict[int, dict[str, object]] = {}
    for (entity_id, property_id), value in latest.items():
        if value is not None and property_id in keys and entity_id in shown:
            values.setdefault(entity_id, {})[keys[property_id]] = json.loads(value)
    return values


def distinct_on_matrix(project, at: dt.datetime | None = None) -> dict[int, dict[str, object]]:
    """The code before the caches: DISTINCT ON over all events in SQL, decoded in Python."""
    from django.db import connection

    from metadata.models import ProjectProperty

    keys = {
        c.property_id: c.property.key
        for c in ProjectProperty.objects.filter(project=project).select_related("property")
    }
    values: dict[int, dict[str, object]] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT ON (entity_id, property_id) entity_id, property_id, value FROM metadata_event"
            " WHERE project_id = %s AND kind = 'set' AND timestamp <= %s"
            " ORDER BY entity_id, property_id, timestamp DESC, id DESC",
            [project.pk, at or dt.datetime.max.replace(tzinfo=dt.UTC)],
        )
        for entity_id, property_id, value in cursor.fetchall():
            if value is not None and property_id in keys:
                values.setdefault(entity_id, {})[keys[property_id]] = json.loads(value)
    return values


def line(name: str, *cells: float) -> str:
    return f"| {name} | " + " | ".join(f"{cell:.0f}" for cell in cells) + " |" * (4 - len(cells))


def timed(function, runs: int) -> tuple[float, object]:
    """Median milliseconds of `runs` calls, and the last result."""
    gc.collect()  # what earlier measures left is not collected during this one
    samples, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000, result


@contextmanager
def rolled_back():
    """A transaction that is always rolled back: what happens inside leaves no trace."""
    from django.db import transaction

    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def cache_of(project_id: int, entity_ids=None) -> tuple:
    from metadata.models import MatrixCache, RowSnapshot, RowState

    states = RowState.objects.filter(project_id=project_id)
    snapshots = RowSnapshot.objects.filter(project_id=project_id)
    if entity_ids is not None:
        states, snapshots = (
            states.filter(entity_id__in=entity_ids),
            snapshots.filter(entity_id__in=entity_ids),
        )
    return (
        sorted(states.values_list("entity_id", "state", "event_count", "last_event_at")),
        sorted(snapshots.values_list("entity_id", "taken_at", "state", "tail")),
        MatrixCache.objects.filter(project_id=project_id).values_list("keys", flat=True).first(),
    )


def random_batch(project, rng: random.Random, size: int) -> list[dict]:
    """`size` changes over a block of rows × columns, as a pasted or imported block would be; new
    values nearly all (yes/no columns are left out, few cells are cleared), so about `size` events."""
    from metadata.models import Entity, ProjectProperty

    columns = list(
        ProjectProperty.objects.filter(project=project)
        .exclude(property__type="boolean")
        .values_list("property__key", "property__type")
    )
    entity_ids = list(Entity.objects.filter(project=project).values_list("pk", flat=True))
    width = min(len(columns), 10)
    height = max(1, size // width)
    first = rng.randrange(0, max(1, len(entity_ids) - height))
    picked = rng.sample(columns, width)
    changes = []
    for entity_id in entity_ids[first : first + height]:
        for key, kind in picked:
            if rng.random() < 0.02:
                value = None
            elif kind in ("integer", "decimal"):
                value = rng.randrange(100_000)
            elif kind == "date":
                value = f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
            else:
                value = f"new {rng.randrange(10**9)}"
            changes.append({"entity": entity_id, "property": key, "value": value})
    return changes[:size]


def live_path_matches_rebuild(big_project, *, log=print) -> str:
    """Edit a small project through `append_events` (with clears, an undo and a redaction), and a
    sample of the big one; the caches written on the way must equal what a rebuild derives."""
    from metadata.models import EntityKind, Event, Project, ProjectProperty
    from metadata.services.entities import create_entities
    from metadata.services.events import append_events, redact_event, undo_batch
    from metadata.services.matrix import rebuild_matrix_cache, rebuild_rows

    rng = random.Random(5)
    with rolled_back():
        owner = big_project.owner
        project = Project.objects.create(name=f"Bench live check {time.time()}", owner=owner)
        kind = EntityKind.objects.create(project=project, key="sample", label="Sample", prefix="S")
        for column in ProjectProperty.objects.filter(project=big_project)[:12]:
            ProjectProperty.objects.create(project=project, property=column.property, entity_kind=kind)
        create_entities(kind, 300, user=owner)
        written = []
        for _ in range(60):
            result = append_events(project, random_batch(project, rng, rng.randrange(1, 400)), author=owner)
            if result.batch:
                written.append(result.batch)
        undo_batch(project, written[len(written) // 2], author=owner)
        redact_event(
            Event.objects.filter(project=project, value__isnull=False).first(), actor=owner, reason="x"
        )
        live = cache_of(project.pk)
        rebuild_matrix_cache([project.pk])
        small_ok = cache_of(project.pk) == live
    with rolled_back():
        result = append_events(big_project, random_batch(big_project, rng, APPEND_EVENTS), author=owner)
        touched = sorted({e.entity_id for e in result.events})[:200]
        live = cache_of(big_project.pk, touched)
        rebuild_rows(big_project.pk, touched)
        big_ok = cache_of(big_project.pk, touched)[:2] == live[:2]
    verdict = (
        f"small project (300 rows, {len(written)} batches, an undo, a redaction): "
        f"{'identical' if small_ok else 'DIFFERENT'}; 200 rows of the big project after a 10,000-event "
        f"batch: {'identical' if big_ok else 'DIFFERENT'}"
    )
    log(f"  live path vs rebuild: {verdict}")
    return verdict


def table_sizes(project) -> list[str]:
    from django.db import connection

    lines = []
    with connection.cursor() as cursor:
        for table, what in (
            ("metadata_event", "events"),
            ("metadata_rowstate", "row states"),
            ("metadata_rowsnapshot", "row snapshots"),
        ):
            cursor.execute(
                f"SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0) FROM {table} t"  # noqa: S608
                " WHERE project_id = %s",
                [project.pk],
            )
            count, payload = cursor.fetchone()
            cursor.execute("SELECT pg_total_relation_size(%s), pg_indexes_size(%s)", [table, table])
            total, indexes = cursor.fetchone()
            lines.append(
                f"| {what} (`{table}`) | {count:,} | {payload / 2**20:.0f} MiB | {total / 2**20:.0f} MiB "
                f"({indexes / 2**20:.0f} MiB indexes) |"
            )
    return lines


def bench_matrix(base: str | None, quick: bool = False, *, log=print) -> tuple[list[tuple], list[str]]:
    """Measure the matrix figures; returns rows for the main table and a report section."""
    import requests
    from django.db import connection, transaction
    from django.db.models import Count, Max, Min
    from django.utils import timezone

    from metadata.models import Event
    from metadata.services import events as event_service
    from metadata.services import matrix as matrix_service
    from metadata.services.events import append_events
    from metadata.services.matrix import events_as_matrix, rebuild_matrix_cache
    from portal.services.tokens import create_api_token

    size = QUICK if quick else FULL
    runs, naive_runs = size["runs"], size["naive_runs"]
    log(f"Matrix benchmark: {size['rows']:,} rows × {size['columns']} columns")
    project = build_dataset(size["rows"], size["columns"], size["batches"], log=log)
    start = time.perf_counter()
    with transaction.atomic():
        counts = rebuild_matrix_cache([project.pk])
    rebuild_s = time.perf_counter() - start
    log(f"  caches rebuilt in {rebuild_s:.1f} s: {counts}")
    with connection.cursor() as cursor:  # give back what earlier runs left (for the sizes below)
        cursor.execute("VACUUM (FULL, ANALYZE) metadata_rowstate, metadata_rowsnapshot")
        cursor.execute("VACUUM (ANALYZE) metadata_event")
    span = project.events.aggregate(count=Count("id"), first=Min("timestamp"), last=Max("timestamp"))
    events, middle = span["count"], span["first"] + (span["last"] - span["first"]) / 2
    checked = live_path_matches_rebuild(project, log=log)

    # Both ways give the same sheet.
    fast, fast_past = events_as_matrix(project), events_as_matrix(project, at=middle)
    assert dict(fast.values.items()) == naive_matrix(project), "current matrix differs from the fold"
    assert dict(fast_past.values.items()) == naive_matrix(project, middle), (
        "past matrix differs from the fold"
    )
    del fast, fast_past

    current_ms, _ = timed(lambda: events_as_matrix(project), runs)
    current_all_ms, _ = timed(lambda: dict(events_as_matrix(project).values.items()), max(3, runs // 2))
    past_ms, _ = timed(lambda: events_as_matrix(project, at=middle), runs)
    past_all_ms, _ = timed(
        lambda: dict(events_as_matrix(project, at=middle).values.items()), max(3, runs // 2)
    )
    naive_ms, _ = timed(lambda: naive_matrix(project), naive_runs)
    naive_past_ms, _ = timed(lambda: naive_matrix(project, middle), naive_runs)
    before_ms, _ = timed(lambda: distinct_on_matrix(project), naive_runs)
    before_past_ms, _ = timed(lambda: distinct_on_matrix(project, middle), naive_runs)
    log(f"  current {current_ms:.0f} ms (naive {naive_ms:.0f}), past {past_ms:.0f} ms")

    # The API through the running ASGI server, against the naive fold rendered by DRF in process.
    from rest_framework.renderers import JSONRenderer

    _, secret = create_api_token(
        project.owner, name="bench matrix", scopes=["read"], expires_at=timezone.now() + dt.timedelta(hours=1)
    )
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"
    url = f"{base}/api/v1/projects/{project.pk}/matrix/"

    def get_matrix() -> bytes:
        response = session.get(url, timeout=60)
        response.raise_for_status()
        return response.content

    body = json.loads(get_matrix())
    assert len(body["rows"]) == size["rows"], "API rows"
    assert {r["id"]: r["values"] for r in body["rows"] if r["values"]} == naive_matrix(project), (
        "API values differ from the fold"
    )
    columns = body["columns"]
    sheet_rows = [(r["id"], r["mnemonic"], r["kind"], r["parent"]) for r in body["rows"]]
    del body
    api_ms, content = timed(get_matrix, runs)
    api_mib = len(content) / 2**20
    del content

    def naive_api() -> bytes:
        values = naive_matrix(project)
        payload = {
            "project": project.pk,
            "at": None,
            "columns": columns,
            "rows": [
                {"id": pk, "mnemonic": mnemonic, "kind": kind, "parent": parent, "values": values.get(pk, {})}
                for pk, mnemonic, kind, parent in sheet_rows
            ],
        }
        return JSONRenderer().render(payload)

    naive_api_ms, _ = timed(naive_api, naive_runs)
    log(f"  API {api_ms:.0f} ms for {api_mib:.1f} MiB (naive {naive_api_ms:.0f})")

    # The editor's first screen in Chromium: first rows drawn and the websocket open; beside the
    # same page waiting for every row before drawing.
    from benchmarks.metadata_sheet import first_screen_ms
    from metadata.services.projects import set_member
    from portal.models import User

    viewer, _ = User.objects.get_or_create(username="bench-sheet")
    viewer.set_password("bench-sheet-password")
    viewer.save()
    set_member(project, viewer, "writer", actor=project.owner)
    screen_runs = 3 if quick else 5
    login = (base, "bench-sheet", "bench-sheet-password", project.pk, screen_runs)
    screen, screen_all = first_screen_ms(*login), first_screen_ms(*login, "?all=1")
    log(f"  sheet first screen {screen['median_ms']:.0f} ms (all rows first {screen_all['median_ms']:.0f})")

    # Appending 10,000 events, each batch rolled back; the baseline skips the cache upkeep.
    rng = random.Random(11)

    def bulk_create_events(template, changes):
        """How events were written before: Event.objects.bulk_create."""
        events = [
            Event(
                project_id=template.project_id,
                entity=c.entity,
                property_id=c.column.property_id,
                value=c.value,
                author_id=template.author_id,
                timestamp=template.timestamp,
                batch=template.batch,
                comment=template.comment,
            )
            for c in changes
        ]
        Event.objects.bulk_create(events)
        return events

    def append(how: str) -> float:
        """One append of 10,000 new values: "now", "no caches" (no cache upkeep) or "before"
        (no cache upkeep, events written with bulk_create as before the caches)."""
        changes = random_batch(project, rng, APPEND_EVENTS)
        record_batch, insert_events = event_service.record_batch, event_service.insert_events
        gc.collect()
        with rolled_back():
            if how != "now":
                event_service.record_batch = lambda *args, **kwargs: None
            if how == "before":
                event_service.insert_events = bulk_create_events
            try:
                start = time.perf_counter()
                result = append_events(project, changes, author=project.owner)
                with connection.cursor() as cursor:  # what a commit would check, before the rollback
                    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                elapsed = time.perf_counter() - start
            finally:
                event_service.record_batch, event_service.insert_events = record_batch, insert_events
            assert len(result.events) > APPEND_EVENTS * 0.9, len(result.events)
        return elapsed

    append("now")
    append_ms = statistics.median(append("now") for _ in range(runs)) * 1000
    append_bare_ms = statistics.median(append("no caches") for _ in range(naive_runs + 2)) * 1000
    append_before_ms = statistics.median(append("before") for _ in range(naive_runs + 2)) * 1000
    log(f"  append {append_ms:.0f} ms (no cache upkeep {append_bare_ms:.0f}, before {append_before_ms:.0f})")

    label = f"{size['rows']:,} × {size['columns']}, {events:,} events"
    naive_is = "naive fold of all events in Python"
    rows = [
        (f"Current matrix ({label}), median (ms)", current_ms, naive_ms, naive_is),
        ("Past matrix at mid-history, median (ms)", past_ms, naive_past_ms, naive_is + " up to then"),
        (
            "Matrix API as JSON, full sheet, median (ms)",
            api_ms,
            naive_api_ms,
            "naive fold + DRF JSONRenderer, in process",
        ),
        (
            "Sheet editor's first screen in Chromium, median (ms)",
            screen["median_ms"],
            screen_all["median_ms"],
            "the same page waiting for every row before drawing",
        ),
        (
            f"Append a {APPEND_EVENTS:,}-event batch, median (ms)",
            append_ms,
            append_bare_ms,
            "the same append without cache upkeep",
        ),
    ]
    section = [
        "",
        "## Derived metadata matrix",
        "",
        f"Project of {label} (generated in SQL; batches spread over 2025, about two values per cell, "
        "some cleared). Targets (issue): current ≤ 100 ms, past ≤ 150 ms, API ≤ 1 s, append ≤ 1 s, "
        "first screen ≤ 1.5 s. "
        f"Medians of {runs} runs; baselines of {naive_runs}.",
        "",
        "| Measure (ms) | Now | Naive fold in Python | DISTINCT ON over all events (before) |",
        "| --- | ---: | ---: | ---: |",
        line("Current matrix, service call", current_ms, naive_ms, before_ms),
        line("Current matrix, every value decoded", current_all_ms, naive_ms, before_ms),
        line("Past matrix at mid-history, service call", past_ms, naive_past_ms, before_past_ms),
        line("Past matrix, every value decoded", past_all_ms, naive_past_ms, before_past_ms),
        line(
            f"API `GET …/matrix/` ({api_mib:.1f} MiB JSON through uvicorn, bearer token; "
            "baseline: naive fold + DRF JSONRenderer in process)",
            api_ms,
            naive_api_ms,
        ),
        line(
            f"Sheet editor's first screen in Chromium: first 100 rows drawn, websocket open "
            f"(navigation start to ready; baseline: the page waiting for all {screen_all['rows']:,} rows)",
            screen["median_ms"],
            screen_all["median_ms"],
        ),
        line(
            f"Append {APPEND_EVENTS:,} events (deferred checks run, then rolled back). "
            "Baselines: without the cache upkeep; "
            "as before this change (no caches, events written by bulk_create)",
            append_ms,
            append_bare_ms,
            append_before_ms,
        ),
        "",
        f"Caches rebuilt from the events in {rebuild_s:.1f} s (migration 0004, `manage.py "
        f"rebuild_matrix_cache`; a snapshot every {matrix_service.SNAPSHOT_EVERY} events of a row). "
        f"Live path vs rebuild: {checked}.",
        "",
        "| Table | Rows of this project | Their size | Whole table on disk |",
        "| --- | ---: | ---: | ---: |",
        *table_sizes(project),
    ]
    return rows, section


def main() -> int:
    from benchmarks.__main__ import setup_django, spawn, wait_http

    quick = "--quick" in sys.argv
    stack = setup_django()
    from benchmarks.__main__ import STATE

    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = os.environ.get("PORTAL_BENCH_PORT", "8766")
    server = spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "portal.asgi:application",
            "--http",
            HTTP_PROTOCOL,
            "--port",
            port,
            "--log-level",
            "warning",
            "--lifespan",
            "off",
        ],
        logs / "web-matrix.log",
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        rows, section = bench_matrix(base, quick=quick)
    finally:
        server.terminate()
        server.wait(timeout=30)
        stack.stop(only_started_here=True)
    print("\n| Measure | Portal | Reference | Ratio | Reference is |\n| --- | ---: | ---: | ---: | --- |")
    for name, ours, reference, what in rows:
        print(f"| {name} | {ours:.1f} | {reference:.1f} | {ours / reference:.2f} | {what} |")
    print("\n".join(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
