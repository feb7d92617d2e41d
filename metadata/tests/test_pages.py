"""The metadata pages for every role: projects, joining, members, settings, entities, labels,
the property catalogue and templates. Roles: anonymous, stranger, reader, writer, owner (project
admin), admin (portal admin, staff)."""

from __future__ import annotations

import re

import pytest

from metadata.models import (
    Entity,
    JoinRequest,
    JoinRequestState,
    Membership,
    Project,
    ProjectProperty,
    Property,
)
from metadata.services.entities import create_entities
from metadata.services.events import append_events
from metadata.services.projects import create_project, request_to_join
from metadata.web.common import optional_url

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "stranger", "reader", "writer", "owner", "admin"]
MEMBERS = ["reader", "writer", "owner", "admin"]



@pytest.fixture
def family(project, people):
    """A patient with two samples, and values (one of them invalid) written as events."""
    patient = create_entities(project.entity_kinds.get(key="patient"), user=people["writer"])[0]
    samples = create_entities(
        project.entity_kinds.get(key="sample"), 2, user=people["writer"], parent=patient
    )
    append_events(
        project,
        [
            {"entity": patient.mnemonic, "property": "age", "value": 200},
            {"entity": patient.mnemonic, "property": "sex", "value": "female"},
            {"entity": samples[0].mnemonic, "property": "species", "value": "Homo sapiens"},
            {"entity": samples[0].mnemonic, "property": "tissue", "value": "lung"},
        ],
        author=people["writer"],
        comment="first values",
    )
    return patient, samples


def html(response) -> str:
    return response.content.decode()


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# --- who may open which page --------------------------------------------------------------------

MEMBER_PAGES = ["/projects/{p}/", "/projects/{p}/labels/", "/projects/{p}/e/{e}/"]
ADMIN_PAGES = ["/projects/{p}/members/", "/projects/{p}/settings/"]
OPEN_PAGES = ["/projects/", "/projects/new/", "/properties/", "/templates/"]


def page(path: str, project, family) -> str:
    return path.format(p=project.pk, e=family[0].mnemonic)


@pytest.mark.parametrize(
    "path", OPEN_PAGES + MEMBER_PAGES + ADMIN_PAGES + ["/properties/new/", "/projects/{p}/e/{e}/qr.svg"]
)
def test_anonymous_users_are_sent_to_sign_in(client, project, family, path):
    response = client.get(page(path, project, family))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_anonymous_posts_are_sent_to_sign_in_and_change_nothing(client, project):
    response = client.post(f"/projects/{project.pk}/join/", {"message": "hi"})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    response = client.post("/projects/new/", {"name": "Sneaky"})
    assert response.status_code == 302
    assert not JoinRequest.objects.exists() and not Project.objects.filter(name="Sneaky").exists()


@pytest.mark.parametrize("role", ROLES[1:])
@pytest.mark.parametrize("path", OPEN_PAGES)
def test_every_signed_in_user_opens_the_open_pages(web, role, path):
    response = web(role).get(path)
    assert response.status_code == 200
    assert 'href="/projects/"' in html(response) and 'href="/properties/"' in html(response)  # navigation


@pytest.mark.parametrize("role", ROLES[1:])
@pytest.mark.parametrize("path", MEMBER_PAGES)
def test_member_pages(web, role, project, family, path):
    response = web(role).get(page(path, project, family))
    if role == "stranger":
        # Strangers see only the name, the description and the way to ask to join.
        assert response.status_code == (200 if path == "/projects/{p}/" else 403)
        text = html(response)
        assert project.name in text and project.description in text and "Ask to join" in text
        assert family[0].mnemonic not in text and "reader" not in text and "Larger than" not in text
    else:
        assert response.status_code == 200
        assert "Ask to join" not in html(response)


@pytest.mark.parametrize("role", ROLES[1:])
@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_pages(web, role, project, family, path):
    response = web(role).get(page(path, project, family))
    expected = {"stranger": 403, "reader": 403, "writer": 403, "owner": 200, "admin": 200}[role]
    assert response.status_code == expected
    if role == "stranger":
        assert "Ask to join" in html(response)


@pytest.mark.parametrize(
    "path",
    [
        "/projects/999999/",
        "/projects/99999999999999999999/",
        "/projects/999999/members/",
        "/projects/999999/e/S-0001/",
        "/projects/{p}/e/NOPE-0001/",
        "/projects/{p}/e/S-9999/",
        "/properties/999999/edit/",
        "/projects/abc/",
    ],
)
def test_bad_ids_are_404(web, project, family, path):
    assert web("admin").get(page(path, project, family)).status_code == 404


@pytest.mark.parametrize("field", ["user", "request"])
@pytest.mark.parametrize("value", ["abc", "", "999999", "1" * 30])
def test_bad_ids_in_member_forms_are_404(web, project, field, value):
    action = "role" if field == "user" else "accept"
    response = web("owner").post(f"/projects/{project.pk}/members/", {"action": action, field: value})
    assert response.status_code == 404


@pytest.mark.parametrize("value", ["abc", "999999"])
def test_bad_ids_in_settings_forms_are_404(web, project, value):
    client = web("owner")
    for action, field in (("remove_column", "column"), ("move_up", "column"), ("apply_template", "template")):
        response = client.post(f"/projects/{project.pk}/settings/", {"action": action, field: value})
        assert response.status_code == 404


# --- project list and search --------------------------------------------------------------------


@pytest.fixture
def other_project(people, template):
    return create_project(
        name="Melanoma atlas", description="Skin biopsies, dermatopathology", owner=people["admin"]
    )


def test_project_list_marks_roles_and_offers_to_join(web, project, other_project, people):
    text = html(web("reader").get("/projects/"))
    assert "Lung study" in text and "Melanoma atlas" in text
    lung = re.search(rf'data-project="{project.pk}".*?</tr>', text, re.S).group(0)
    melanoma = re.search(rf'data-project="{other_project.pk}".*?</tr>', text, re.S).group(0)
    assert "Reader" in lung and "Ask to join" not in lung
    assert "Ask to join" in melanoma
    request_to_join(other_project, people["reader"], message="please")
    text = html(web("reader").get("/projects/"))
    melanoma = re.search(rf'data-project="{other_project.pk}".*?</tr>', text, re.S).group(0)
    assert "Request pending" in melanoma and "Ask to join" not in melanoma


def test_project_search_covers_names_and_descriptions(web, project, other_project):
    client = web("stranger")
    by_name = html(client.get("/projects/?q=lung"))
    assert "Lung study" in by_name and "Melanoma atlas" not in by_name
    by_description = html(client.get("/projects/?q=dermatopath"))
    assert "Melanoma atlas" in by_description and "Lung study" not in by_description
    nothing = html(client.get("/projects/?q=zebrafish"))
    assert "No project matches" in nothing
    mine = html(web("reader").get("/projects/?mine=1"))
    assert "Lung study" in mine and "Melanoma atlas" not in mine


def test_empty_project_list_says_how_to_start(web, people):
    assert "Create the first one" in html(web("stranger").get("/projects/"))


def test_project_list_query_count_is_capped(web, people, django_assert_max_num_queries):
    for number in range(30):
        create_project(name=f"Project {number}", description="d", owner=people["owner"])
    client = web("reader")
    with django_assert_max_num_queries(10):
        response = client.get("/projects/")
    assert response.status_code == 200 and html(response).count("data-project=") == 30


# --- creating a project -------------------------------------------------------------------------


def test_create_project_from_a_template(web, template, people):
    client = web("stranger")
    form = client.get("/projects/new/")
    assert "Tiny" in html(form) and 'for="id_name"' in html(form)
    response = client.post(
        "/projects/new/", {"name": "Colon cohort", "description": "CRC", "template": template.pk}
    )
    project = Project.objects.get(name="Colon cohort")
    assert response.status_code == 302 and response["Location"] == f"/projects/{project.pk}/"
    assert project.owner == people["stranger"] and project.template == template
    assert Membership.objects.get(project=project, user=people["stranger"]).role == "admin"
    assert set(project.entity_kinds.values_list("key", flat=True)) == {"patient", "sample"}
    assert project.project_properties.count() == 4
    overview = html(client.get(response["Location"]))
    assert "Colon cohort" in overview and "Patient" in overview and "Settings and columns" in overview


def test_create_project_without_a_template_gets_one_kind(web):
    response = web("reader").post("/projects/new/", {"name": "Bare", "template": ""})
    assert response.status_code == 302
    assert list(Project.objects.get(name="Bare").entity_kinds.values_list("key", flat=True)) == ["sample"]


@pytest.mark.parametrize(
    "data,field",
    [
        ({"name": "lung STUDY"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "X", "template": "999999"}, "template"),
    ],
)
def test_create_project_with_bad_input_shows_errors(web, project, data, field):
    before = Project.objects.count()
    response = web("writer").post("/projects/new/", data)
    assert response.status_code == 400 and response.context["form"].errors[field]
    assert 'role="alert"' in html(response)
    assert Project.objects.count() == before


# --- overview and links -------------------------------------------------------------------------


def test_overview_shows_kinds_counts_members_and_links(web, project, family, people):
    text = html(web("reader").get(f"/projects/{project.pk}/"))
    assert "Adenocarcinoma cohort" in text and "Tiny" in text
    assert "Patient" in text and "Sample" in text
    for name in ("owner", "reader", "writer"):
        assert name in text
    assert f"/projects/{project.pk}/labels/" in text
    assert f"/projects/{project.pk}/members/" not in text  # readers do not manage members
    assert f"/projects/{project.pk}/e/{family[0].mnemonic}/" in text
    for name in ("sheet", "export"):  # shown only once those pages exist
        url = optional_url(f"metadata:{name}", project.pk)
        assert url is None or url in text
    import_url = optional_url("metadata:import", project.pk)
    assert import_url is None or import_url not in text  # readers do not import
    assert import_url is None or import_url in html(web("writer").get(f"/projects/{project.pk}/"))
    admin_text = html(web("owner").get(f"/projects/{project.pk}/"))
    assert (
        f"/projects/{project.pk}/members/" in admin_text and f"/projects/{project.pk}/settings/" in admin_text
    )


def test_optional_url_is_none_for_pages_that_do_not_exist():
    assert optional_url("metadata:no-such-page", 1) is None
    assert optional_url("metadata:project-detail", 1) == "/projects/1/"


def test_go_to_a_row_by_its_id(web, project, family):
    client = web("reader")
    response = client.get(f"/projects/{project.pk}/?row={family[1][0].mnemonic.lower()}")
    assert (
        response.status_code == 302
        and response["Location"] == f"/projects/{project.pk}/e/{family[1][0].mnemonic}/"
    )
    missing = client.get(f"/projects/{project.pk}/?row=Q-1234")
    assert missing.status_code == 200 and "There is no row “Q-1234”" in html(missing)


def test_portal_admin_sees_every_project_without_membership(web, project, family):
    response = web("admin").get(f"/projects/{project.pk}/")
    assert response.status_code == 200 and "Ask to join" not in html(response)


# --- joining ------------------------------------------------------------------------------------


def test_join_then_accept(web, project, family, people):
    stranger = web("stranger")
    response = stranger.post(
        f"/projects/{project.pk}/join/", {"message": "I run the lung biobank"}, follow=True
    )
    assert "Your request was sent" in html(response) and "Request pending" in html(response)
    join = JoinRequest.objects.get(project=project, user=people["stranger"])
    assert join.state == JoinRequestState.PENDING and join.message == "I run the lung biobank"
    again = stranger.post(f"/projects/{project.pk}/join/", {"message": ""}, follow=True)
    assert "already waiting" in html(again)
    assert JoinRequest.objects.filter(project=project, user=people["stranger"]).count() == 1

    owner = web("owner")
    members = html(owner.get(f"/projects/{project.pk}/members/"))
    assert "I run the lung biobank" in members and "stranger" in members
    response = owner.post(
        f"/projects/{project.pk}/members/",
        {"action": "accept", "request": join.pk, "role": "writer"},
        follow=True,
    )
    assert "stranger joined as writer" in html(response)
    assert Membership.objects.get(project=project, user=people["stranger"]).role == "writer"
    join.refresh_from_db()
    assert join.state == JoinRequestState.ACCEPTED and join.decided_by == people["owner"]
    page_now = web("stranger").get(f"/projects/{project.pk}/e/{family[0].mnemonic}/")
    assert page_now.status_code == 200


def test_join_then_decline(web, project, people):
    web("stranger").post(f"/projects/{project.pk}/join/", {"message": ""})
    join = JoinRequest.objects.get(project=project, user=people["stranger"])
    response = web("owner").post(
        f"/projects/{project.pk}/members/", {"action": "decline", "request": join.pk}
    )
    assert response.status_code == 302
    join.refresh_from_db()
    assert join.state == JoinRequestState.DECLINED
    assert not Membership.objects.filter(project=project, user=people["stranger"]).exists()
    # A declined request does not stop a new one, and a decided one cannot be decided again.
    again = web("owner").post(
        f"/projects/{project.pk}/members/", {"action": "accept", "request": join.pk}, follow=True
    )
    assert "already declined" in html(again)
    assert web("stranger").post(f"/projects/{project.pk}/join/", {}).status_code == 302
    assert JoinRequest.objects.filter(project=project, user=people["stranger"], state="pending").count() == 1


def test_members_cannot_ask_to_join_their_own_project(web, project):
    response = web("reader").post(f"/projects/{project.pk}/join/", {}, follow=True)
    assert "already a member" in html(response) and not JoinRequest.objects.exists()


def test_join_message_too_long_is_a_form_error(web, project):
    response = web("stranger").post(f"/projects/{project.pk}/join/", {"message": "x" * 2001})
    assert response.status_code == 400 and response.context["form"].errors["message"]
    assert not JoinRequest.objects.exists()


def test_join_unknown_project_is_404(web):
    assert web("stranger").post("/projects/999999/join/", {}).status_code == 404


@pytest.mark.parametrize("role", ["reader", "writer"])
def test_only_project_admins_decide_and_manage(web, project, people, role):
    join = request_to_join(project, people["stranger"])
    client = web(role)
    assert (
        client.post(f"/projects/{project.pk}/members/", {"action": "accept", "request": join.pk}).status_code
        == 403
    )
    response = client.post(
        f"/projects/{project.pk}/members/", {"action": "role", "user": people["reader"].pk, "role": "admin"}
    )
    assert response.status_code == 403
    join.refresh_from_db()
    assert (
        join.state == "pending"
        and Membership.objects.get(project=project, user=people["reader"]).role == "reader"
    )


# --- members ------------------------------------------------------------------------------------


def test_change_role_remove_and_add(web, project, people):
    client = web("owner")
    url = f"/projects/{project.pk}/members/"
    client.post(url, {"action": "role", "user": people["reader"].pk, "role": "writer"})
    assert Membership.objects.get(project=project, user=people["reader"]).role == "writer"
    client.post(url, {"action": "remove", "user": people["writer"].pk})
    assert not Membership.objects.filter(project=project, user=people["writer"]).exists()
    client.post(url, {"action": "add", "username": "stranger", "role": "reader"})
    assert Membership.objects.get(project=project, user=people["stranger"]).role == "reader"
    response = client.post(url, {"action": "add", "username": "nobody", "role": "reader"}, follow=True)
    assert "No active user is called “nobody”" in html(response)
    response = client.post(url, {"action": "role", "user": people["reader"].pk, "role": "boss"}, follow=True)
    assert "Choose reader, writer or admin" in html(response)


def test_the_last_admin_can_be_neither_demoted_nor_removed(web, project, people):
    client = web("owner")
    url = f"/projects/{project.pk}/members/"
    page_text = html(client.get(url))
    assert "the only admin" in page_text
    response = client.post(url, {"action": "role", "user": people["owner"].pk, "role": "reader"}, follow=True)
    assert "at least one admin" in html(response)
    response = client.post(url, {"action": "remove", "user": people["owner"].pk}, follow=True)
    assert "at least one admin" in html(response)
    assert Membership.objects.get(project=project, user=people["owner"]).role == "admin"


def test_an_admin_who_steps_down_lands_on_the_overview(web, project, people):
    client = web("owner")
    url = f"/projects/{project.pk}/members/"
    client.post(url, {"action": "role", "user": people["writer"].pk, "role": "admin"})
    response = client.post(url, {"action": "role", "user": people["owner"].pk, "role": "reader"})
    assert response.status_code == 302 and response["Location"] == f"/projects/{project.pk}/"
    assert Membership.objects.get(project=project, user=people["owner"]).role == "reader"


# --- settings -----------------------------------------------------------------------------------


def columns_of(project, kind: str) -> list[str]:
    return list(
        ProjectProperty.objects.filter(project=project, entity_kind__key=kind)
        .order_by("position", "id")
        .values_list("property__key", flat=True)
    )


def test_rename_project(web, project, other_project):
    client = web("owner")
    url = f"/projects/{project.pk}/settings/"
    response = client.post(url, {"action": "details", "name": "Lung study II", "description": "New text"})
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.name == "Lung study II" and project.description == "New text"
    clash = client.post(url, {"action": "details", "name": "melanoma ATLAS", "description": ""})
    assert clash.status_code == 400 and clash.context["details"].errors["name"]
    project.refresh_from_db()
    assert project.name == "Lung study II"


def test_add_reorder_require_and_remove_columns(web, project):
    client = web("owner")
    url = f"/projects/{project.pk}/settings/"
    age = Property.objects.get(key="age")
    sample = project.entity_kinds.get(key="sample")
    assert columns_of(project, "sample") == ["species", "tissue"]
    response = client.post(
        url, {"action": "add_column", "property": age.pk, "entity_kind": sample.pk, "required": "on"}
    )
    assert response.status_code == 302
    assert columns_of(project, "sample") == ["species", "tissue", "age"]
    duplicate = client.post(url, {"action": "add_column", "property": age.pk, "entity_kind": sample.pk})
    assert duplicate.status_code == 400 and duplicate.context["add_column"].errors["property"]
    column = ProjectProperty.objects.get(project=project, entity_kind=sample, property=age)
    assert column.required
    client.post(url, {"action": "move_up", "column": column.pk})
    assert columns_of(project, "sample") == ["species", "age", "tissue"]
    client.post(url, {"action": "move_down", "column": column.pk})
    client.post(url, {"action": "move_down", "column": column.pk})  # already last: stays
    assert columns_of(project, "sample") == ["species", "tissue", "age"]
    client.post(url, {"action": "toggle_required", "column": column.pk})
    column.refresh_from_db()
    assert not column.required
    client.post(url, {"action": "remove_column", "column": column.pk})
    assert columns_of(project, "sample") == ["species", "tissue"]


def test_columns_of_another_project_cannot_be_touched(web, project, other_project, people):
    foreign = ProjectProperty.objects.filter(project=other_project).first() or ProjectProperty.objects.create(
        project=other_project,
        entity_kind=other_project.entity_kinds.first(),
        property=Property.objects.get(key="age"),
    )
    response = web("owner").post(
        f"/projects/{project.pk}/settings/", {"action": "remove_column", "column": foreign.pk}
    )
    assert response.status_code == 404 and ProjectProperty.objects.filter(pk=foreign.pk).exists()


def test_add_column_with_a_kind_of_another_project_is_refused(web, project, other_project):
    kind = other_project.entity_kinds.first()
    response = web("owner").post(
        f"/projects/{project.pk}/settings/",
        {"action": "add_column", "property": Property.objects.get(key="age").pk, "entity_kind": kind.pk},
    )
    assert response.status_code == 400 and response.context["add_column"].errors["entity_kind"]


def test_apply_template_adds_missing_kinds_and_columns(web, people, template):
    bare = create_project(name="Bare", owner=people["owner"])
    response = web("owner").post(
        f"/projects/{bare.pk}/settings/", {"action": "apply_template", "template": template.pk}
    )
    assert response.status_code == 302
    assert set(bare.entity_kinds.values_list("key", flat=True)) == {"sample", "patient"}
    assert columns_of(bare, "sample") == ["species", "tissue"]


@pytest.mark.parametrize("role", ["stranger", "reader", "writer"])
def test_only_project_admins_change_settings(web, project, role):
    response = web(role).post(
        f"/projects/{project.pk}/settings/", {"action": "details", "name": "Hijacked", "description": ""}
    )
    assert response.status_code == 403
    project.refresh_from_db()
    assert project.name == "Lung study"


# --- entity pages -------------------------------------------------------------------------------


def test_entity_page_shows_values_validation_family_and_history(web, project, family):
    patient, samples = family
    text = html(web("reader").get(f"/projects/{project.pk}/e/{patient.mnemonic}/"))
    assert patient.mnemonic in text and "Patient" in text
    assert "Age" in text and "200 years" in text and "Larger than 130." in text  # invalid, marked
    assert 'class="value-row invalid"' in text
    assert "female" in text
    for sample in samples:
        assert f'href="/projects/{project.pk}/e/{sample.mnemonic}/"' in text
    assert "first values" in text and "writer" in text  # history: comment and author
    assert "<svg" in text and f"http://testserver/projects/{project.pk}/e/{patient.mnemonic}/" in text
    child = html(web("reader").get(f"/projects/{project.pk}/e/{samples[0].mnemonic}/"))
    assert f'href="/projects/{project.pk}/e/{patient.mnemonic}/"' in child and "Homo sapiens" in child
    assert "(human)" in child  # the option's description


def test_entity_page_of_a_row_without_values(web, project, family):
    sample = family[1][1]
    text = html(web("writer").get(f"/projects/{project.pk}/e/{sample.mnemonic}/"))
    assert "No values recorded yet." in text


def test_entity_page_query_count_is_capped(web, project, family, django_assert_max_num_queries):
    patient = family[0]
    create_entities(project.entity_kinds.get(key="sample"), 40, parent=patient)
    client = web("reader")
    with django_assert_max_num_queries(20):
        assert client.get(f"/projects/{project.pk}/e/{patient.mnemonic}/").status_code == 200


# --- labels -------------------------------------------------------------------------------------


def test_label_sheet_for_a_kind_with_values(web, project, family):
    patient, samples = family
    client = web("reader")
    form = client.get(f"/projects/{project.pk}/labels/")
    assert form.status_code == 200 and 'class="label"' not in html(form)
    response = client.get(
        f"/projects/{project.pk}/labels/", {"show": "1", "kind": "sample", "field_1": "tissue"}
    )
    text = html(response)
    assert response.status_code == 200 and text.count('class="label"') == 2
    assert all(s.mnemonic in text for s in samples) and patient.mnemonic not in text
    assert "lung" in text and project.name in text and text.count("<svg") == 2
    assert "window.print()" in text and "metadata/pages.css" in text


def test_label_sheet_for_chosen_ids(web, project, family):
    patient, samples = family
    response = web("reader").get(
        f"/projects/{project.pk}/labels/", {"mnemonics": f"{samples[1].mnemonic}, {patient.mnemonic}\nX-0404"}
    )
    text = html(response)
    assert text.count('class="label"') == 2
    assert text.index(samples[1].mnemonic, text.index("label-sheet")) < text.index(
        patient.mnemonic, text.index("label-sheet")
    )  # in the order given
    assert "Not found in this project: X-0404." in text


def test_label_sheet_pages_and_layouts(web, project, family):
    create_entities(project.entity_kinds.get(key="sample"), 25)
    client = web("reader")
    small = html(client.get(f"/projects/{project.pk}/labels/", {"kind": "sample", "layout": "3x8"}))
    assert small.count('class="label-page"') == 2 and small.count('class="label"') == 27
    large = html(client.get(f"/projects/{project.pk}/labels/", {"kind": "sample", "layout": "2x5"}))
    assert large.count('class="label-page"') == 3 and "layout-2x5" in large


def test_label_sheet_with_bad_choices_is_a_form_error(web, project):
    response = web("reader").get(f"/projects/{project.pk}/labels/", {"kind": "spaceship", "field_1": "nope"})
    assert response.status_code == 400
    assert set(response.context["form"].errors) == {"kind", "field_1"}


# --- property catalogue -------------------------------------------------------------------------


def test_property_list_search_and_type_filter(web, template):
    client = web("stranger")
    text = html(client.get("/properties/"))
    assert "Species" in text and "Homo sapiens" in text and "New property" not in text
    assert "from 0 to 130" in text
    found = html(client.get("/properties/?q=where the sample"))
    assert 'data-property="tissue"' in found and 'data-property="age"' not in found
    integers = html(client.get("/properties/?type=integer"))
    assert 'data-property="age"' in integers and 'data-property="tissue"' not in integers
    assert client.get("/properties/?type=bogus&page=1").status_code == 200
    assert "No property matches" in html(client.get("/properties/?q=zzzzzz"))


def test_portal_admins_see_edit_links(web, template):
    text = html(web("admin").get("/properties/"))
    assert "New property" in text and f"/properties/{Property.objects.get(key='age').pk}/edit/" in text


@pytest.mark.parametrize("role", ["stranger", "reader", "writer", "owner"])
def test_non_admins_get_403_on_property_edit_pages(web, role, template, project):
    client = web(role)
    age = Property.objects.get(key="age")
    assert client.get("/properties/new/").status_code == 403
    assert client.get(f"/properties/{age.pk}/edit/").status_code == 403
    assert (
        client.post("/properties/new/", {"key": "evil", "label": "Evil", "type": "text"}).status_code == 403
    )
    assert client.post(f"/properties/{age.pk}/edit/", {"label": "Evil", "type": "text"}).status_code == 403
    assert not Property.objects.filter(key="evil").exists()
    assert Property.objects.get(key="age").label == "Age"


GOOD = {
    "key": "ki67_index",
    "label": "Ki-67 index",
    "description": "Share of Ki-67 positive tumour cells.",
    "type": "decimal",
    "unit": "%",
    "regex": "",
    "min_value": "0",
    "max_value": "100",
    "options_text": "",
    "examples_text": "12.5\n40",
}


def test_portal_admin_creates_a_property(web):
    client = web("admin")
    form = client.get("/properties/new/")
    assert form.status_code == 200 and 'for="id_options_text"' in html(form)
    response = client.post("/properties/new/", GOOD)
    assert response.status_code == 302
    prop = Property.objects.get(key="ki67_index")
    assert prop.unit == "%" and prop.min_value == 0 and prop.max_value == 100
    assert prop.examples == ["12.5", "40"] and prop.options == []


def test_options_are_edited_as_lines(web):
    client = web("admin")
    data = {
        **GOOD,
        "key": "grade",
        "type": "choice",
        "min_value": "",
        "max_value": "",
        "options_only": "on",
        "options_text": "G1 | well differentiated\n\nG2|moderately \nG3",
    }
    assert client.post("/properties/new/", data).status_code == 302
    prop = Property.objects.get(key="grade")
    assert prop.options_only
    assert prop.options == [
        {"value": "G1", "description": "well differentiated"},
        {"value": "G2", "description": "moderately"},
        {"value": "G3"},
    ]
    edit = html(client.get(f"/properties/{prop.pk}/edit/"))
    assert "G1 | well differentiated" in edit


@pytest.mark.parametrize(
    "change,field",
    [
        ({"regex": "[unclosed"}, "regex"),
        ({"min_value": "10", "max_value": "5"}, "max_value"),
        ({"key": "species"}, "key"),
        ({"key": "Bad Key"}, "key"),
        ({"label": ""}, "label"),
        ({"type": "colour"}, "type"),
        ({"type": "text"}, "min_value"),
        ({"type": "choice", "min_value": "", "max_value": ""}, "options_text"),
        ({"options_only": "on"}, "options_only"),
        ({"options_text": "| no value"}, "options_text"),
        ({"options_text": "a\na"}, "options_text"),
        ({"min_value": "ten"}, "min_value"),
    ],
)
def test_bad_property_input_shows_errors_and_saves_nothing(web, template, change, field):
    before = Property.objects.count()
    response = web("admin").post("/properties/new/", {**GOOD, **change})
    assert response.status_code == 400
    assert field in response.context["form"].errors, response.context["form"].errors
    assert 'role="alert"' in html(response)
    assert Property.objects.count() == before and not Property.objects.filter(key="ki67_index").exists()


def test_property_key_cannot_change_on_edit(web, template):
    age = Property.objects.get(key="age")
    client = web("admin")
    page_text = html(client.get(f"/properties/{age.pk}/edit/"))
    assert "disabled" in re.search(r'<input[^>]*name="key"[^>]*>', page_text).group(0)
    response = client.post(
        f"/properties/{age.pk}/edit/",
        {
            "key": "renamed",
            "label": "Age at diagnosis",
            "type": "integer",
            "unit": "years",
            "min_value": "0",
            "max_value": "120",
            "description": "",
            "options_text": "",
            "examples_text": "",
        },
    )
    assert response.status_code == 302
    age.refresh_from_db()
    assert age.key == "age" and age.label == "Age at diagnosis" and age.max_value == 120


def test_bad_property_edit_keeps_the_old_values(web, template):
    age = Property.objects.get(key="age")
    response = web("admin").post(
        f"/properties/{age.pk}/edit/", {"label": "Age", "type": "integer", "min_value": "5", "max_value": "1"}
    )
    assert response.status_code == 400
    age.refresh_from_db()
    assert age.min_value == 0 and age.max_value == 130


def test_property_changes_are_visible_through_the_api(web, people):
    from rest_framework.test import APIClient

    web("admin").post("/properties/new/", GOOD)
    api = APIClient()
    api.force_authenticate(people["stranger"])
    body = api.get("/api/v1/properties/ki67_index/").json()
    assert body["label"] == "Ki-67 index" and body["examples"] == ["12.5", "40"]


# --- templates ----------------------------------------------------------------------------------


def test_template_list_shows_kinds_and_properties(web, template):
    text = html(web("reader").get("/templates/"))
    assert "Tiny" in text and "Patient" in text and "Sample" in text
    section = re.search(r'id="tiny".*?</section>', text, re.S).group(0)
    assert "Species" in section and "Age" in section and "belongs to a patient" in section


def test_entities_created_by_the_api_have_working_deep_links(web, project):
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(Membership.objects.get(project=project, role="writer").user)
    created = api.post(
        f"/api/v1/projects/{project.pk}/entities/", {"kind": "sample", "count": 1}, format="json"
    )
    url = created.json()[0]["url"]
    entity = Entity.objects.get(project=project, mnemonic=created.json()[0]["mnemonic"])
    assert url.endswith(f"/projects/{project.pk}/e/{entity.mnemonic}/")
    assert web("reader").get(url).status_code == 200
