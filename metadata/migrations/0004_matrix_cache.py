"""Caches of the derived matrix: each row's current values, snapshots for past moments.

The tables are filled from the existing events by the same code as `manage.py
rebuild_matrix_cache`. Sheets read thousands of these JSON texts at a time, so they are kept
uncompressed inside the row (unpacking compressed text cost more than reading the bytes: 25 ms
of a 115 ms past sheet of 10,000 rows; the snapshots take 60 % more space for it).
"""

import django.db.models.deletion
import django.db.models.functions.datetime
from django.db import migrations, models

STORAGE = """
ALTER TABLE metadata_rowstate ALTER COLUMN state SET STORAGE EXTERNAL, SET (toast_tuple_target = 8160);
ALTER TABLE metadata_rowsnapshot ALTER COLUMN state SET STORAGE EXTERNAL,
    ALTER COLUMN tail SET STORAGE EXTERNAL, SET (toast_tuple_target = 8160);
"""


def backfill(apps, schema_editor):
    from metadata.services.matrix import rebuild_matrix_cache

    rebuild_matrix_cache(using=schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("metadata", "0003_shipped_templates"),
    ]

    operations = [
        migrations.CreateModel(
            name="MatrixCache",
            fields=[
                (
                    "project",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="metadata.project",
                    ),
                ),
                ("keys", models.JSONField(blank=True, default=dict, help_text="{JSON key: property id}")),
                ("rebuilt_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "ordering": ["project"],
            },
        ),
        migrations.CreateModel(
            name="RowState",
            fields=[
                (
                    "entity",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="metadata.entity",
                    ),
                ),
                ("state", models.TextField(default="{}", help_text="JSON object {property key: value}.")),
                ("event_count", models.PositiveIntegerField(default=0)),
                (
                    "last_event_at",
                    models.DateTimeField(blank=True, help_text="Timestamp of the latest batch.", null=True),
                ),
                ("updated_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="metadata.project"
                    ),
                ),
            ],
            options={
                "ordering": ["entity"],
            },
        ),
        migrations.CreateModel(
            name="RowSnapshot",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("taken_at", models.DateTimeField()),
                ("state", models.TextField(help_text="JSON object {property key: value} at `taken_at`.")),
                (
                    "tail",
                    models.TextField(
                        default="[]",
                        help_text="Later changes: [[µs since 1970, property id, value], …] (JSON).",
                    ),
                ),
                (
                    "entity",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="metadata.entity",
                    ),
                ),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="metadata.project"
                    ),
                ),
            ],
            options={
                "ordering": ["entity", "taken_at"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("entity", "taken_at"), name="one_snapshot_per_row_and_moment"
                    )
                ],
            },
        ),
        migrations.RunSQL(STORAGE, migrations.RunSQL.noop),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
