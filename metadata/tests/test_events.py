"""Events: append-only in the database, batches, time travel, undo, redaction."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.utils import IntegrityError, InternalError, ProgrammingError

from metadata.models import Event, EventKind
from metadata.services.events import EventError, append_events, redact_event, undo_batch
from metadata.services.matrix import batches, cell_history, events_as_matrix, matrix_difference
from portal.models import AuditEvent

pytestmark = pytest.mark.django_db


def write(project, person, *cells, comment=""):
    return append_events(
        project,
        [{"entity": e.pk, "property": k, "value": v} for e, k, v in cells],
        author=person,
        comment=comment,
    )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE metadata_event SET value = '\"changed\"'",
        "UPDATE metadata_event SET comment = 'x'",
        "DELETE FROM metadata_event",
    ],
)
def test_raw_sql_cannot_change_or_delete_events(project, samples, people, statement):
    write(project, people["writer"], (samples[0], "tissue", "lung"))
    with pytest.raises((InternalError, ProgrammingError), match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert Event.objects.get().value == "lung"


def test_redaction_setting_does_not_open_other_changes(project, samples, people):
    write(project, people["writer"], (samples[0], "tissue", "lung"))
    with pytest.raises((InternalError, ProgrammingError), match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT set_config('metadata.redaction', 'on', true)")
            cursor.execute("UPDATE metadata_event SET value = '\"other\"', redacted = true")


def insert_event(cursor, event, **changes):
    """Insert a copy of `event` by raw SQL, with `changes` (column: value)."""
    row = {
        "project_id": event.project_id,
        "entity_id": event.entity_id,
        "property_id": event.property_id,
        "author_id": event.author_id,
        "target_id": None,
        **changes,
    }
    columns, placeholders = ", ".join(row), ", ".join(["%s"] * len(row))
    sql = f"INSERT INTO metadata_event ({columns}, kind, redacted, batch, comment) VALUES ({placeholders}, "  # noqa: S608 - column names are fixed
    cursor.execute(sql + "'set', false, gen_random_uuid(), '')", list(row.values()))


@pytest.mark.parametrize(
    "column, what", [("entity_id", "entity"), ("property_id", "property"), ("project_id", "project"),
                     ("author_id", "author"), ("target_id", "target event")]
)
def test_raw_sql_cannot_insert_an_event_that_refers_to_nothing(project, samples, people, column, what):
    event = write(project, people["writer"], (samples[0], "tissue", "lung")).events[0]
    with connection.cursor() as cursor:
        insert_event(cursor, event)  # the same references: accepted
        with pytest.raises(IntegrityError, match=f"refers to {what} 987654321 which does not exist"):
            with transaction.atomic():
                insert_event(cursor, event, **{column: 987654321})
    assert Event.objects.count() == 2


@pytest.mark.parametrize("table", ["metadata_entity", "metadata_property", "metadata_project", "portal_user"])
def test_raw_sql_cannot_delete_what_events_refer_to(project, samples, people, table):
    event = write(project, people["writer"], (samples[0], "tissue", "lung")).events[0]
    referenced = {
        "metadata_entity": event.entity_id,
        "metadata_property": event.property_id,
        "metadata_project": event.project_id,
        "portal_user": event.author_id,
    }[table]
    refused = f"{table} {referenced} cannot be deleted: metadata events refer"
    with pytest.raises(IntegrityError, match=refused):
        with transaction.atomic(), connection.cursor() as cursor:  # (other foreign keys: at commit)
            cursor.execute(f"DELETE FROM {table} WHERE id = %s", [referenced])  # noqa: S608
    assert Event.objects.get().entity_id == samples[0].pk
    # A row no event refers to goes.
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM metadata_entity WHERE id = %s", [samples[2].pk])
        assert cursor.rowcount == 1


def test_matrix_at_each_batch_is_what_it_was_then(project, samples, people):
    s1, s2, s3 = samples
    first = write(
        project,
        people["writer"],
        (s1, "tissue", "lung"),
        (s2, "tissue", "liver"),
        (s1, "species", "Homo sapiens"),
    )
    second = write(project, people["owner"], (s1, "tissue", "bronchus"), (s3, "species", "Mus musculus"))
    third = write(project, people["writer"], (s2, "tissue", None), (s3, "tissue", "skin"))
    expected = {
        first.timestamp: {s1.pk: {"tissue": "lung", "species": "Homo sapiens"}, s2.pk: {"tissue": "liver"}},
        second.timestamp: {
            s1.pk: {"tissue": "bronchus", "species": "Homo sapiens"},
            s2.pk: {"tissue": "liver"},
            s3.pk: {"species": "Mus musculus"},
        },
        third.timestamp: {
            s1.pk: {"tissue": "bronchus", "species": "Homo sapiens"},
            s3.pk: {"species": "Mus musculus", "tissue": "skin"},
        },
    }
    for moment, values in expected.items():
        assert events_as_matrix(project, at=moment).values == values
    assert events_as_matrix(project).values == expected[third.timestamp]
    assert first.timestamp < second.timestamp < third.timestamp
    assert {e.batch for e in first.events} == {first.batch}
    assert matrix_difference(project, first.timestamp, second.timestamp) == [
        {
            "entity": s1.pk,
            "mnemonic": s1.mnemonic,
            "property": "tissue",
            "before": "lung",
            "after": "bronchus",
        },
        {
            "entity": s3.pk,
            "mnemonic": s3.mnemonic,
            "property": "species",
            "before": None,
            "after": "Mus musculus",
        },
    ]
    assert [b["count"] for b in batches(project)] == [2, 2, 3]


def test_unchanged_values_make_no_events(project, samples, people):
    write(project, people["writer"], (samples[0], "tissue", "lung"))
    again = write(project, people["writer"], (samples[0], "tissue", " lung "))
    assert again.batch is None and again.unchanged == 1
    assert Event.objects.count() == 1


def test_bad_changes_write_nothing(project, samples, people):
    patient = project.entity_kinds.get(key="patient")
    with pytest.raises(EventError) as error:
        append_events(
            project,
            [
                {"entity": samples[0].pk, "property": "tissue", "value": "lung"},
                {"entity": 999999, "property": "tissue", "value": "x"},
                {"entity": samples[0].mnemonic, "property": "age", "value": 3},
                {"entity": samples[0].pk, "property": "tissue", "value": "x", "extra": 1},
            ],
            author=people["writer"],
        )
    assert set(error.value.errors) == {"1", "2", "3"}
    assert "no column 'age'" in error.value.errors["2"][0]
    assert not Event.objects.exists()
    assert patient.label == "Patient"


def test_undo_restores_the_values_before_the_batch(project, samples, people):
    s1, s2, _ = samples
    write(project, people["writer"], (s1, "tissue", "lung"))
    mistake = write(project, people["writer"], (s1, "tissue", "liver"), (s2, "tissue", "skin"))
    write(project, people["owner"], (s2, "tissue", "bone"))  # changed again since: a conflict
    undone = undo_batch(project, mistake.batch, author=people["owner"])
    assert undone.conflicts == [{"entity": s2.mnemonic, "property": "tissue"}]
    matrix = events_as_matrix(project)
    assert matrix.value(s1.pk, "tissue") == "lung" and matrix.value(s2.pk, "tissue") == "bone"
    assert Event.objects.filter(batch=mistake.batch).count() == 2  # history kept
    with pytest.raises(EventError):
        undo_batch(project, undone.batch.__class__(int=0), author=people["owner"])


def test_redaction_blanks_one_value_and_leaves_a_tombstone_and_audit(project, samples, people):
    s1 = samples[0]
    write(project, people["writer"], (s1, "tissue", "Jane Doe, born 1970"))
    write(project, people["writer"], (s1, "tissue", "lung"))
    wrong = Event.objects.get(value="Jane Doe, born 1970")
    tombstone = redact_event(wrong, actor=people["owner"], reason="patient name typed by mistake")
    wrong.refresh_from_db()
    assert wrong.value is None and wrong.redacted
    assert tombstone.kind == EventKind.REDACTION and tombstone.target_id == wrong.pk
    assert events_as_matrix(project).value(s1.pk, "tissue") == "lung"
    assert "Jane Doe" not in str(list(Event.objects.values_list("value", flat=True)))
    history = cell_history(s1, wrong.property_id)
    assert [e.kind for e in history] == ["set", "set", "redaction"]
    audit = AuditEvent.objects.get(action="metadata.value_redacted")
    assert audit.actor == people["owner"]
    with pytest.raises(EventError):
        redact_event(wrong, actor=people["owner"], reason="again")
