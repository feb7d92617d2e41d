"""Ship the property catalogue and templates (see `metadata/shipped.py`).

Removing the migration deletes the three templates and the shipped properties nothing uses.
"""

from django.db import migrations

from metadata.shipped import PROPERTIES, TEMPLATES, ship_templates


def ship(apps, schema_editor):
    ship_templates(
        apps.get_model("metadata", "Property"),
        apps.get_model("metadata", "Template"),
        apps.get_model("metadata", "TemplateProperty"),
    )


def unship(apps, schema_editor):
    Property = apps.get_model("metadata", "Property")
    Template = apps.get_model("metadata", "Template")
    Template.objects.filter(key__in=TEMPLATES).delete()
    Property.objects.filter(key__in=PROPERTIES, templates=None, project_properties=None, events=None).delete()


class Migration(migrations.Migration):
    dependencies = [("metadata", "0002_events_append_only")]

    operations = [migrations.RunPython(ship, unship)]
