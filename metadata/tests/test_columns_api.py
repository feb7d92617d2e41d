"""Columns through the API: move, require, remove (project admins); templates applied later."""

from __future__ import annotations

import pytest

from metadata.models import ProjectProperty, Template, TemplateProperty
from metadata.tests.test_api import ADMIN_STATUS, ROLES, expect
from portal.models import AuditEvent


def columns(project, kind="sample"):
    return list(
        ProjectProperty.objects.filter(project=project, entity_kind__key=kind)
        .order_by("position", "id").values_list("property__key", flat=True)
    )


@pytest.mark.parametrize("role", ROLES)
def test_moving_and_requiring_a_column(api, project, role):
    column = ProjectProperty.objects.get(project=project, property__key="tissue")
    assert columns(project) == ["species", "tissue"]
    url = f"/api/v1/projects/{project.pk}/columns/{column.pk}/"
    response = api(role).patch(url, {"position": 0, "required": True}, format="json")
    expect(response, ADMIN_STATUS[role])
    moved = ADMIN_STATUS[role] == 200
    assert columns(project) == (["tissue", "species"] if moved else ["species", "tissue"])
    assert ProjectProperty.objects.get(pk=column.pk).required is moved
    assert AuditEvent.objects.filter(action="project.column_changed").exists() is moved
    if moved:
        assert response.json()["position"] == 0 and response.json()["required"] is True


@pytest.mark.parametrize("role", ROLES)
def test_removing_a_column_keeps_its_history(api, project, role):
    column = ProjectProperty.objects.get(project=project, property__key="tissue")
    response = api(role).delete(f"/api/v1/projects/{project.pk}/columns/{column.pk}/")
    expect(response, {**ADMIN_STATUS, "owner": 204, "admin": 204}[role])
    removed = ADMIN_STATUS[role] == 200
    assert ProjectProperty.objects.filter(pk=column.pk).exists() is not removed
    assert AuditEvent.objects.filter(action="project.column_removed").exists() is removed


@pytest.mark.parametrize(
    "body",
    [{}, {"position": -1}, {"position": "first"}, {"required": "maybe"}, {"width": 3}],
)
def test_bad_column_changes_are_400(api, project, body):
    column = ProjectProperty.objects.get(project=project, property__key="tissue")
    response = api("owner").patch(f"/api/v1/projects/{project.pk}/columns/{column.pk}/", body, format="json")
    assert response.status_code == 400, response.content
    assert columns(project) == ["species", "tissue"]


def test_a_column_twice_is_400(api, project):
    url = f"/api/v1/projects/{project.pk}/columns/"
    response = api("owner").post(url, {"property": "tissue", "entity_kind": "sample"}, format="json")
    assert response.status_code == 400
    assert "Sample rows have this column already." in str(response.json())


@pytest.mark.parametrize("role", ROLES)
def test_applying_a_template_later(api, project, template, role):
    more = Template.objects.create(
        key="more", name="More", entity_kinds=[{"key": "specimen", "label": "Specimen", "prefix": "S"}]
    )
    TemplateProperty.objects.create(
        template=more, property=template.template_properties.get(property__key="tissue").property,
        entity_kind="specimen", position=0,
    )
    response = api(role).post(
        f"/api/v1/projects/{project.pk}/apply-template/", {"template": "more"}, format="json"
    )
    expect(response, ADMIN_STATUS[role])
    if ADMIN_STATUS[role] == 200:
        specimen = project.entity_kinds.get(key="specimen")
        assert specimen.prefix == "SP"  # S is the samples' prefix already
        assert columns(project, "specimen") == ["tissue"]
        assert AuditEvent.objects.filter(action="project.template_applied").exists()
    else:
        assert not project.entity_kinds.filter(key="specimen").exists()
    assert api("owner").post(
        f"/api/v1/projects/{project.pk}/apply-template/", {"template": "nope"}, format="json"
    ).status_code == 400
