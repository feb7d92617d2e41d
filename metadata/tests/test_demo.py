"""`manage.py load_demo_data` also gives the demo a metadata project with a short history."""

from __future__ import annotations

import io

from django.core.management import call_command

from metadata.demo import DEMO_PROJECT
from metadata.models import Event, Project
from metadata.services.matrix import batches, events_as_matrix
from metadata.services.values import validation_message


def test_demo_metadata_is_loaded_once_with_three_batches(db, settings):
    settings.DEBUG = True
    call_command("ship_templates", verbosity=0)  # transactional tests elsewhere truncate them
    out = io.StringIO()
    call_command("load_demo_data", stdout=out)
    assert f"created demo project {DEMO_PROJECT!r} with 20 rows" in out.getvalue()
    project = Project.objects.get(name=DEMO_PROJECT)
    assert {m.user.username: m.role for m in project.memberships.select_related("user")} == {
        "researcher": "admin", "admin": "writer"}
    assert [b["comment"] for b in batches(project)] == [
        "Corrections after the tumour board",
        "Libraries from the sequencing core",
        "Sample sheet from the clinic",
    ]
    matrix = events_as_matrix(project)
    columns = {(c.entity_kind.key, c.property.key): c.property for c in matrix.columns}
    invalid = [
        (entity.mnemonic, key)
        for entity in matrix.entities
        for key, value in matrix.values.get(entity.pk, {}).items()
        if validation_message(columns[(entity.kind.key, key)], value)
    ]
    assert invalid == [("S-0006", "species")]  # one value left for the demo user to correct
    count = Event.objects.count()
    call_command("load_demo_data", stdout=io.StringIO())
    assert Event.objects.count() == count


def test_a_changed_template_skips_the_demo_project_whole(db, settings):
    from metadata.models import TemplateProperty

    settings.DEBUG = True
    call_command("ship_templates", verbosity=0)
    # an admin took a column the demo fills in out of the shipped template
    TemplateProperty.objects.filter(template__key="sequencing", property__key="tissue").delete()
    out = io.StringIO()
    call_command("load_demo_data", stdout=out)
    assert "demo metadata skipped: the template 'sequencing' was changed here" in out.getvalue()
    assert not Project.objects.filter(name=DEMO_PROJECT).exists()  # nothing half-made
    call_command("ship_templates", verbosity=0)  # shipped again: the next run makes the project
    call_command("load_demo_data", stdout=io.StringIO())
    assert Project.objects.filter(name=DEMO_PROJECT).exists()
