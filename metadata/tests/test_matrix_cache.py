"""The matrix caches (row states and snapshots) always give what folding the events gives."""

from __future__ import annotations

import datetime as dt
import importlib
import io
import json
import random
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from metadata.models import (
    Entity,
    Event,
    EventKind,
    MatrixCache,
    ProjectProperty,
    Property,
    PropertyType,
    RowSnapshot,
    RowState,
)
from metadata.services import matrix as matrix_service
from metadata.services.entities import create_entities
from metadata.services.events import EventError, append_events, redact_event, undo_batch
from metadata.services.matrix import events_as_matrix, matrix_difference, rebuild_matrix_cache

from .conftest import catalogue_entry

pytestmark = pytest.mark.django_db

EVERY = 3  # snapshot often, so that the tests cross many snapshots


@pytest.fixture(autouse=True)
def small_snapshot_interval(monkeypatch):
    monkeypatch.setattr(matrix_service, "SNAPSHOT_EVERY", EVERY)


def naive_matrix(project, at: dt.datetime | None = None) -> dict[int, dict[str, object]]:
    """The sheet by folding every event in Python: the reference the caches must agree with."""
    keys = {
        c.property_id: c.property.key
        for c in ProjectProperty.objects.filter(project=project).select_related("property")
    }
    entities = Entity.objects.filter(project=project)
    if at is not None:
        entities = entities.filter(created_at__lte=at)
    shown = set(entities.values_list("pk", flat=True))
    latest = {}
    for event in Event.objects.filter(project=project, kind=EventKind.SET).order_by("timestamp", "id"):
        if at is not None and event.timestamp > at:
            break
        latest[(event.entity_id, event.property_id)] = event.value
    values: dict[int, dict[str, object]] = {}
    for (entity_id, property_id), value in latest.items():
        if value is not None and property_id in keys and entity_id in shown:
            values.setdefault(entity_id, {})[keys[property_id]] = value
    return values


def check(project, at: dt.datetime | None = None) -> None:
    matrix = events_as_matrix(project, at=at)
    expected = naive_matrix(project, at)
    assert matrix.values == expected, f"at {at}"
    assert len(matrix.values) == len(expected) and set(matrix.values) == set(expected)
    for row in matrix.rows:
        assert (row.id in matrix.values) is (row.id in expected)
        assert json.loads(matrix.values.raw(row.id)) == expected.get(row.id, {})
    shown = Entity.objects.filter(project=project)
    if at is not None:
        shown = shown.filter(created_at__lte=at)
    assert [e.pk for e in matrix.entities] == list(
        shown.order_by("kind__position", "id").values_list("pk", flat=True)
    )


def cache_contents(project) -> tuple:
    states = sorted(
        RowState.objects.filter(project=project).values_list(
            "entity_id", "state", "event_count", "last_event_at"
        )
    )
    snapshots = sorted(
        RowSnapshot.objects.filter(project=project).values_list("entity_id", "taken_at", "state", "tail")
    )
    keys = MatrixCache.objects.filter(project=project).values_list("keys", flat=True).first()
    return states, snapshots, keys


TEXTS = ["lung", "liver", "Zürich", 'say "hi"', "back\\slash", "line\u2028break", "x" * 300, "", "  ", None]


class Scenario:
    """Random edits of a project: batches, clears, undo, redaction, new rows, columns removed,
    re-added and renamed. Remembers moments between steps to look back at."""

    def __init__(self, project, people, seed: int):
        self.project, self.people = project, people
        self.random = random.Random(seed)
        self.patient_kind = project.entity_kinds.get(key="patient")
        self.sample_kind = project.entity_kinds.get(key="sample")
        weight = catalogue_entry("weight", label="Weight", type=PropertyType.DECIMAL)
        collected = catalogue_entry("collected", label="Collected", type=PropertyType.DATE)
        for position, prop in enumerate([weight, collected], start=10):
            ProjectProperty.objects.create(
                project=project, property=prop, entity_kind=self.sample_kind, position=position
            )
        self.batches = []
        self.moments = []
        self.removed: list[ProjectProperty] = []
        self.new_rows(self.patient_kind, 2)
        self.new_rows(self.sample_kind, 3)

    def new_rows(self, kind, count: int) -> None:
        create_entities(kind, count, user=self.people["writer"])
        self.moments.append(timezone.now())

    def value_for(self, prop: Property):
        pick = self.random.random()
        if pick < 0.15:
            return None
        if prop.type == PropertyType.INTEGER:
            return self.random.choice([1, 2, 3, 40, "4O", 2.0])
        if prop.type == PropertyType.DECIMAL:
            return self.random.choice([1.5, 2, "3,25", 1e20, -0.0, "n/a"])
        if prop.type == PropertyType.DATE:
            return self.random.choice(["2024-01-02", "03.04.2025", "someday"])
        if prop.type == PropertyType.CHOICE:
            return self.random.choice([o["value"] for o in prop.options] + ["other"])
        return self.random.choice(TEXTS)

    def append(self) -> None:
        columns = list(ProjectProperty.objects.filter(project=self.project).select_related("property"))
        rows = list(Entity.objects.filter(project=self.project))
        changes = []
        for _ in range(self.random.randint(1, 8)):
            entity = self.random.choice(rows)
            usable = [c for c in columns if c.entity_kind_id == entity.kind_id]
            if not usable:
                continue
            column = self.random.choice(usable)
            changes.append(
                {
                    "entity": entity.pk,
                    "property": column.property.key,
                    "value": self.value_for(column.property),
                }
            )
        if not changes:
            return
        result = append_events(self.project, changes, author=self.people["writer"])
        if result.batch:
            self.batches.append(result.batch)
            self.moments.append(result.timestamp)

    def undo(self) -> None:
        if self.batches:
            try:
                result = undo_batch(
                    self.project, self.random.choice(self.batches), author=self.people["owner"]
                )
            except EventError:
                return
            if result.batch:
                self.moments.append(result.timestamp)

    def redact(self) -> None:
        candidates = list(
            Event.objects.filter(
                project=self.project, kind=EventKind.SET, redacted=False, value__isnull=False
            )
        )
        if candidates:
            tombstone = redact_event(
                self.random.choice(candidates), actor=self.people["owner"], reason="test"
            )
            self.moments.append(tombstone.timestamp)

    def toggle_column(self) -> None:
        if self.removed and self.random.random() < 0.6:
            gone = self.removed.pop()
            ProjectProperty.objects.create(
                project=self.project,
                property=gone.property,
                entity_kind=gone.entity_kind,
                position=gone.position,
            )
        else:
            columns = list(ProjectProperty.objects.filter(project=self.project).select_related("property"))
            column = self.random.choice(columns)
            self.removed.append(column)
            column.delete()

    def rename(self) -> None:
        prop = self.random.choice(
            list(Property.objects.filter(project_properties__project=self.project).distinct())
        )
        prop.key = f"{prop.key.split('__')[0]}__{self.random.randint(0, 9999)}"
        prop.save()

    def run(self, steps: int) -> None:
        actions = [self.append] * 12 + [self.undo] * 2 + [self.redact, self.toggle_column, self.rename]
        for step in range(steps):
            self.random.choice(actions)()
            if step % 10 == 9:
                self.new_rows(self.random.choice([self.patient_kind, self.sample_kind]), 1)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_edits_agree_with_folding_the_events(project, people, seed):
    scenario = Scenario(project, people, seed)
    scenario.run(40)
    check(project)
    for moment in scenario.moments:
        check(project, moment)
        check(project, moment - dt.timedelta(microseconds=1))
    check(project, scenario.moments[0] - dt.timedelta(days=1))
    check(project, timezone.now() + dt.timedelta(days=1))
    # No past sheet ever folds more than SNAPSHOT_EVERY changes of a row.
    for tail in RowSnapshot.objects.filter(project=project).values_list("tail", flat=True):
        assert len(json.loads(tail)) < EVERY
    # Differences between moments, from the caches, agree with the folds.
    for before, after in zip(scenario.moments, scenario.moments[5:], strict=False):
        old, new = naive_matrix(project, before), naive_matrix(project, after)
        expected = sorted(
            (entity_id, key)
            for entity_id in set(old) | set(new)
            for key in set(old.get(entity_id, {})) | set(new.get(entity_id, {}))
            if old.get(entity_id, {}).get(key) != new.get(entity_id, {}).get(key)
        )
        assert [(c["entity"], c["property"]) for c in matrix_difference(project, before, after)] == expected


def test_rebuild_gives_the_same_caches(project, people):
    scenario = Scenario(project, people, seed=7)
    scenario.run(40)
    for removed in scenario.removed:  # every column back, then one more batch renames stale keys
        ProjectProperty.objects.create(
            project=project, property=removed.property, entity_kind=removed.entity_kind, position=99
        )
    scenario.removed.clear()
    sample = Entity.objects.filter(project=project, kind__key="sample").first()
    tissue = Property.objects.get(key__startswith="tissue").key
    append_events(
        project, [{"entity": sample.pk, "property": tissue, "value": "final"}], author=people["writer"]
    )
    live = cache_contents(project)
    assert live[0] and live[1]
    with transaction.atomic():
        counts = rebuild_matrix_cache([project.pk])
    assert counts == {"rows": len(live[0]), "snapshots": len(live[1])}
    assert cache_contents(project) == live
    call_command("rebuild_matrix_cache", "--project", str(project.pk), stdout=io.StringIO())
    call_command("rebuild_matrix_cache", stdout=io.StringIO())
    assert cache_contents(project) == live
    # The migration's backfill fills empty tables the same way.
    for model in (RowSnapshot, RowState, MatrixCache):
        model.objects.all().delete()
    migration = importlib.import_module("metadata.migrations.0004_matrix_cache")
    with transaction.atomic():
        migration.backfill(None, SimpleNamespace(connection=connection))
    assert cache_contents(project) == live
    check(project)


def test_rebuild_command_refuses_unknown_projects():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No project"):
        call_command("rebuild_matrix_cache", "--project", "999999")


def test_rolled_back_append_leaves_the_caches_alone(project, samples, people):
    append_events(
        project, [{"entity": samples[0].pk, "property": "tissue", "value": "lung"}], author=people["writer"]
    )
    before = cache_contents(project)
    with pytest.raises(RuntimeError), transaction.atomic():
        append_events(
            project,
            [
                {"entity": samples[0].pk, "property": "tissue", "value": "liver"},
                {"entity": samples[1].pk, "property": "species", "value": "Mus musculus"},
            ],
            author=people["writer"],
        )
        assert cache_contents(project) != before
        raise RuntimeError("rolled back")
    assert cache_contents(project) == before
    check(project)


def test_redaction_fixes_the_row_now_and_in_the_past(project, samples, people):
    s1 = samples[0]

    def write(value):
        return append_events(
            project, [{"entity": s1.pk, "property": "tissue", "value": value}], author=people["writer"]
        )

    first = write("lung")
    for number in range(EVERY * 2):  # several snapshots after the value to redact
        write(f"value {number}")
    wrong = write("Jane Doe, born 1970")
    redact_event(Event.objects.get(batch=first.batch), actor=people["owner"], reason="typed by mistake")
    redact_event(Event.objects.get(batch=wrong.batch), actor=people["owner"], reason="a name")
    assert events_as_matrix(project).value(s1.pk, "tissue") is None  # the latest value is gone
    assert events_as_matrix(project, at=first.timestamp).value(s1.pk, "tissue") is None
    assert (
        events_as_matrix(project, at=wrong.timestamp - dt.timedelta(microseconds=1)).value(s1.pk, "tissue")
        == f"value {EVERY * 2 - 1}"
    )
    cached = " ".join(RowState.objects.values_list("state", flat=True))
    cached += " ".join(s + t for s, t in RowSnapshot.objects.values_list("state", "tail"))
    assert "Jane Doe" not in cached and '"lung"' not in cached
    check(project)
    check(project, wrong.timestamp)


def test_the_api_serves_cached_rows_as_they_are_and_translated(project, samples, people):
    append_events(
        project,
        [
            {"entity": samples[0].pk, "property": "tissue", "value": "lung\u2028x"},
            {"entity": samples[1].pk, "property": "species", "value": "Homo sapiens"},
        ],
        author=people["writer"],
    )
    client = APIClient()
    client.force_authenticate(people["reader"])
    url = f"/api/v1/projects/{project.pk}/matrix/"

    def served() -> dict:
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "application/json"
        assert "\u2028" not in response.content.decode()
        body = response.json()
        assert set(body) == {"project", "at", "columns", "rows"}
        assert body["project"] == project.pk and body["at"] is None
        return {r["id"]: r["values"] for r in body["rows"]}

    assert served() == {
        samples[0].pk: {"tissue": "lung\u2028x"},
        samples[1].pk: {"species": "Homo sapiens"},
        samples[2].pk: {},
    }
    species = Property.objects.get(key="species")
    species.key = "organism"
    species.save()  # renamed: the cache still says "species" until the next write
    assert served()[samples[1].pk] == {"organism": "Homo sapiens"}
    ProjectProperty.objects.filter(project=project, property__key="tissue").delete()
    assert served()[samples[0].pk] == {}
    csv_text = client.get(url, {"format": "csv"}).content.decode()
    assert "organism" in csv_text.splitlines()[0] and "Homo sapiens" in csv_text
    at = timezone.now().isoformat()
    past = client.get(url, {"at": at}).json()
    assert past["at"] and {r["id"]: r["values"] for r in past["rows"]}[samples[1].pk] == {
        "organism": "Homo sapiens"
    }
    assert client.get(url, {"at": "yesterday"}).status_code == 400
    first = client.get(url, {"limit": 2}).json()
    assert first["total"] == 3 and [r["id"] for r in first["rows"]] == [samples[0].pk, samples[1].pk]
    assert client.get(url, {"limit": 2, "format": "csv"}).content.decode().count("\n") == 3
    assert client.get(url, {"limit": "0"}).status_code == 400
    assert client.get(url, {"limit": "²"}).status_code == 400
    assert client.get(url, {"limit": "9" * 30}).json()["total"] == 3  # no overflow, all rows
    past_first = client.get(url, {"limit": 1, "at": at}).json()
    assert past_first["total"] == 3 and [r["id"] for r in past_first["rows"]] == [samples[0].pk]


def test_a_batch_stamped_before_the_latest_one_is_folded_in_time_order(project, samples, people, monkeypatch):
    from metadata.services import events as event_service

    s1, s2, s3 = samples
    append_events(
        project, [{"entity": s1.pk, "property": "tissue", "value": "lung"}], author=people["writer"]
    )
    real_lock = event_service._lock_project
    monkeypatch.setattr(event_service, "_lock_project", lambda pid: real_lock(pid) - dt.timedelta(hours=1))
    late = append_events(  # a clock that went back: s1's earlier value, s2 and s3 new
        project,
        [
            {"entity": s1.pk, "property": "tissue", "value": "liver"},
            {"entity": s1.pk, "property": "species", "value": "Mus musculus"},
            {"entity": s2.pk, "property": "tissue", "value": "skin"},
        ],
        author=people["writer"],
    )
    assert events_as_matrix(project).value(s1.pk, "tissue") == "lung"
    check(project)
    check(project, late.timestamp)
    live = cache_contents(project)
    with transaction.atomic():
        rebuild_matrix_cache([project.pk])
    assert cache_contents(project) == live


def test_unchanged_cells_are_found_in_the_row_caches(project, samples, people):
    """A batch leaves out cells that already hold the value; clearing an empty cell writes nothing."""
    writer = people["writer"]
    cell = {"entity": samples[0].pk, "property": "tissue"}
    assert append_events(project, [{**cell, "value": None}], author=writer).batch is None
    first = append_events(project, [{**cell, "value": "lung"}, {**cell, "entity": samples[1].pk,
                                                                 "value": "liver"}], author=writer)
    assert len(first.events) == 2
    again = append_events(project, [{**cell, "value": "lung"}, {**cell, "entity": samples[1].pk,
                                                                 "value": "colon"}], author=writer)
    assert len(again.events) == 1 and again.unchanged == 1
    cleared = append_events(project, [{**cell, "value": None}], author=writer)
    assert len(cleared.events) == 1
    assert append_events(project, [{**cell, "value": None}], author=writer).batch is None
    assert append_events(project, [{**cell, "value": "1"}], author=writer).events[0].value == "1"
