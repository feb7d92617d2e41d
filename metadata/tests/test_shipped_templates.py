"""The templates the portal ships: consistent, usable, and enough to start a project from."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command

from metadata.models import Property, PropertyType, Template
from metadata.services.projects import create_project
from portal.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def shipped(db):
    """Migration 0003 ships them; transactional tests empty the tables, so ship again (idempotent)."""
    call_command("ship_templates", verbosity=0)


@pytest.mark.parametrize("key", ["sequencing", "pathology", "imaging"])
def test_shipped_template_is_consistent_and_starts_a_project(key):
    template = Template.objects.get(key=key)
    kinds = {k["key"]: k for k in template.entity_kinds}
    assert len({k["prefix"] for k in kinds.values()}) == len(kinds)
    assert all(k.get("parent") in (None, *kinds) for k in kinds.values())
    links = list(template.template_properties.select_related("property"))
    assert links and all(link.entity_kind in kinds for link in links)
    assert any(link.required for link in links)
    project = create_project(
        name=f"From {key}", owner=User.objects.create_user(f"owner-{key}"), template=template
    )
    assert set(project.entity_kinds.values_list("key", flat=True)) == set(kinds)
    assert project.project_properties.count() == len(links)


def test_catalogue_entries_are_well_formed():
    for prop in Property.objects.all():
        assert re.fullmatch(r"[a-z][a-z0-9_]{0,62}", prop.key)
        assert prop.label and prop.description and prop.examples, prop.key
        if prop.type == PropertyType.CHOICE:
            assert prop.options and all("value" in o for o in prop.options), prop.key
        if prop.regex:
            assert all(re.fullmatch(prop.regex, e) for e in prop.examples), prop.key


def test_sequencing_fields_follow_ega_and_ghga_vocabularies():
    species = Property.objects.get(key="species")
    assert "Homo sapiens" in [o["value"] for o in species.options]
    strategies = [o["value"] for o in Property.objects.get(key="library_strategy").options]
    assert {"WGS", "WXS", "RNA-Seq"} <= set(strategies)
    columns = Template.objects.get(key="sequencing").template_properties.values_list(
        "entity_kind", "property__key"
    )
    assert ("library", "instrument_model") in columns and ("sample", "species") in columns
