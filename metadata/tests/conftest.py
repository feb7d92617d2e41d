"""Fixtures for the metadata app: users in each project role, a small template and project."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from metadata.models import Property, PropertyType, Template, TemplateProperty
from metadata.services.entities import create_entities
from metadata.services.projects import create_project, set_member
from portal.models import User


@pytest.fixture
def people(db) -> dict[str, User | None]:
    make = User.objects.create_user
    return {
        "anonymous": None,
        "stranger": make("stranger", password="pw-for-tests-1"),
        "reader": make("reader", password="pw-for-tests-1"),
        "writer": make("writer", password="pw-for-tests-1"),
        "owner": make("owner", password="pw-for-tests-1"),
        "admin": make("boss", password="pw-for-tests-1", is_staff=True),
    }


@pytest.fixture
def api(people):
    """`api(role)`: an API client signed in as that role's user (none for "anonymous")."""

    def client(role: str) -> APIClient:
        client = APIClient()
        if people[role] is not None:
            client.force_authenticate(people[role])
        return client

    return client


@pytest.fixture
def web(people):
    """`web(role)`: a browser-like client signed in as that role's user (a new one per call)."""

    def client(role: str, **kwargs) -> Client:
        client = Client(**kwargs)
        if people[role] is not None:
            client.force_login(people[role])
        return client

    return client


def catalogue_entry(key: str, **fields) -> Property:
    """A property for the tests; shipped keys (species, tissue, sex) are overwritten for the test."""
    prop, _ = Property.objects.update_or_create(key=key, defaults=fields)
    return prop


@pytest.fixture
def template(db) -> Template:
    species = catalogue_entry(
        "species",
        label="Species",
        type=PropertyType.CHOICE,
        options=[
            {"value": "Homo sapiens", "description": "human"},
            {"value": "Mus musculus", "description": "mouse"},
        ],
    )
    age = catalogue_entry(
        "age", label="Age", type=PropertyType.INTEGER, unit="years", min_value=0, max_value=130
    )
    tissue = catalogue_entry(
        "tissue", label="Tissue", type=PropertyType.TEXT, options=[], description="Where the sample was taken"
    )
    sex = catalogue_entry(
        "sex",
        label="Sex",
        type=PropertyType.CHOICE,
        options=[{"value": "female"}, {"value": "male"}, {"value": "unknown"}],
    )
    template = Template.objects.create(
        key="tiny",
        name="Tiny",
        entity_kinds=[
            {"key": "patient", "label": "Patient", "prefix": "P"},
            {"key": "sample", "label": "Sample", "prefix": "S", "parent": "patient"},
        ],
    )
    for position, (prop, kind) in enumerate(
        [(sex, "patient"), (age, "patient"), (species, "sample"), (tissue, "sample")]
    ):
        TemplateProperty.objects.create(template=template, property=prop, entity_kind=kind, position=position)
    return template


@pytest.fixture
def project(people, template):
    project = create_project(
        name="Lung study", description="Adenocarcinoma cohort", owner=people["owner"], template=template
    )
    set_member(project, people["reader"], "reader", actor=people["owner"])
    set_member(project, people["writer"], "writer", actor=people["owner"])
    return project


@pytest.fixture
def samples(project, people):
    kind = project.entity_kinds.get(key="sample")
    return create_entities(kind, 3, user=people["writer"])
