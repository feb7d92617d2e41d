"""Check the references of events once per statement instead of once per row.

Foreign key constraints check each inserted event's five references one by one at commit: for
a batch of 10,000 events that took a quarter of the append. Instead:

- after each INSERT into metadata_event, one statement-level trigger looks up the distinct
  referenced ids of all new rows at once (and locks them FOR KEY SHARE, as a foreign key check
  does, so that a concurrent delete waits for this transaction);
- after each DELETE from a referenced table, a statement-level trigger refuses to delete a row
  that events still reference (the app refuses first: the references are PROTECT).

Either raises foreign_key_violation with the id at fault. The single-column indexes Django made
for the project and entity references are left out (composite indexes that begin with them
serve), and the redaction target gets a partial index (only tombstones have one).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

INSERT_CHECK = """
CREATE OR REPLACE FUNCTION metadata_event_check_references() RETURNS trigger AS $$
DECLARE
    missing text;
BEGIN
    PERFORM 1 FROM metadata_entity x WHERE x.id IN (SELECT entity_id FROM added) FOR KEY SHARE;
    PERFORM 1 FROM metadata_property x WHERE x.id IN (SELECT property_id FROM added) FOR KEY SHARE;
    PERFORM 1 FROM metadata_project x WHERE x.id IN (SELECT project_id FROM added) FOR KEY SHARE;
    PERFORM 1 FROM {users} x WHERE x.id IN (SELECT author_id FROM added) FOR KEY SHARE;
    SELECT problem INTO missing FROM (
        SELECT 'entity ' || a.id AS problem FROM (SELECT DISTINCT entity_id AS id FROM added) a
            WHERE NOT EXISTS (SELECT 1 FROM metadata_entity x WHERE x.id = a.id)
        UNION ALL
        SELECT 'property ' || a.id FROM (SELECT DISTINCT property_id AS id FROM added) a
            WHERE NOT EXISTS (SELECT 1 FROM metadata_property x WHERE x.id = a.id)
        UNION ALL
        SELECT 'project ' || a.id FROM (SELECT DISTINCT project_id AS id FROM added) a
            WHERE NOT EXISTS (SELECT 1 FROM metadata_project x WHERE x.id = a.id)
        UNION ALL
        SELECT 'author ' || a.id FROM (SELECT DISTINCT author_id AS id FROM added) a
            WHERE a.id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {users} x WHERE x.id = a.id)
        UNION ALL
        SELECT 'target event ' || a.target_id FROM added a
            WHERE a.target_id IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM metadata_event x WHERE x.id = a.target_id)
    ) problems LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'metadata_event refers to % which does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER metadata_event_references
    AFTER INSERT ON metadata_event REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION metadata_event_check_references();

CREATE OR REPLACE FUNCTION metadata_event_protect_referenced() RETURNS trigger AS $$
DECLARE
    still bigint;
BEGIN
    EXECUTE format(
        'SELECT g.id FROM gone g WHERE EXISTS (SELECT 1 FROM metadata_event e WHERE e.%I = g.id) LIMIT 1',
        TG_ARGV[0]
    ) INTO still;
    IF still IS NOT NULL THEN
        RAISE EXCEPTION '% % cannot be deleted: metadata events refer to it', TG_TABLE_NAME, still
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
"""

DELETE_CHECK = """
CREATE TRIGGER metadata_event_protect_{column}
    AFTER DELETE ON {table} REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION metadata_event_protect_referenced('{column}');
"""


def referenced(apps) -> list[tuple[str, str]]:
    """Each table events refer to, with the events' column that refers to it."""
    users = apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table
    return [
        ("metadata_entity", "entity_id"),
        ("metadata_property", "property_id"),
        ("metadata_project", "project_id"),
        (users, "author_id"),
    ]


def forward(apps, schema_editor):
    users = apps.get_model(settings.AUTH_USER_MODEL)._meta.db_table
    schema_editor.execute(INSERT_CHECK.replace("{users}", users), params=None)
    for table, column in referenced(apps):
        schema_editor.execute(DELETE_CHECK.format(table=table, column=column), params=None)


def backward(apps, schema_editor):
    for table, column in referenced(apps):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS metadata_event_protect_{column} ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS metadata_event_protect_referenced()")
    schema_editor.execute("DROP TRIGGER IF EXISTS metadata_event_references ON metadata_event")
    schema_editor.execute("DROP FUNCTION IF EXISTS metadata_event_check_references()")


class Migration(migrations.Migration):
    dependencies = [
        ("metadata", "0004_matrix_cache"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="event",
            name="author",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AlterField(
            model_name="event",
            name="entity",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="events",
                to="metadata.entity",
            ),
        ),
        migrations.AlterField(
            model_name="event",
            name="project",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="events",
                to="metadata.project",
            ),
        ),
        migrations.AlterField(
            model_name="event",
            name="property",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="events",
                to="metadata.property",
            ),
        ),
        migrations.AlterField(
            model_name="event",
            name="target",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                help_text="For a redaction: the event whose value was removed.",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="metadata.event",
            ),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(
                condition=models.Q(("target__isnull", False)),
                fields=["target"],
                name="metadata_event_tombstones",
            ),
        ),
        migrations.RunPython(forward, backward),
    ]
