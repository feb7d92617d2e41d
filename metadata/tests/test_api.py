"""The metadata API for every role: anonymous, stranger, reader, writer, owner (project admin), admin."""

from __future__ import annotations

import csv
import io

import pytest

from metadata.models import Event, Membership, Project
from metadata.services.events import append_events

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "stranger", "reader", "writer", "owner", "admin"]



@pytest.fixture
def filled(project, samples, people):
    return append_events(
        project,
        [
            {"entity": samples[0].pk, "property": "tissue", "value": "lung"},
            {"entity": samples[1].pk, "property": "species", "value": "homo sapiens"},
        ],
        author=people["writer"],
    )


def expect(response, status: int):
    assert response.status_code == status, response.content[:500]
    if status >= 400 and response["Content-Type"].startswith("text/csv"):
        assert response.content.decode().startswith("error")
    elif status >= 400:
        assert "detail" in response.json() and "code" in response.json()
    return response


# --- who may do what -----------------------------------------------------------------------------

READ_STATUS = {"anonymous": 401, "stranger": 404, "reader": 200, "writer": 200, "owner": 200, "admin": 200}
WRITE_STATUS = {"anonymous": 401, "stranger": 404, "reader": 403, "writer": 201, "owner": 201, "admin": 201}
ADMIN_STATUS = {"anonymous": 401, "stranger": 404, "reader": 403, "writer": 403, "owner": 200, "admin": 200}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "path",
    [
        "",
        "members/",
        "kinds/",
        "columns/",
        "entities/",
        "events/",
        "matrix/",
        "matrix/?format=csv",
        "batches/",
        "entities/{entity}/history/?property=tissue",
    ],
)
def test_reading_inside_a_project(api, project, samples, filled, role, path):
    url = f"/api/v1/projects/{project.pk}/" + path.format(entity=samples[0].pk)
    expect(api(role).get(url), READ_STATUS[role])


@pytest.mark.parametrize("role", ROLES)
def test_appending_events(api, project, samples, role):
    response = api(role).post(
        f"/api/v1/projects/{project.pk}/events/",
        {"changes": [{"entity": samples[0].mnemonic, "property": "tissue", "value": "liver"}]},
        format="json",
    )
    expect(response, WRITE_STATUS[role])
    assert Event.objects.exists() is (WRITE_STATUS[role] == 201)


@pytest.mark.parametrize("role", ROLES)
def test_creating_rows(api, project, role):
    response = api(role).post(
        f"/api/v1/projects/{project.pk}/entities/", {"kind": "patient", "count": 2}, format="json"
    )
    expect(response, WRITE_STATUS[role])
    if response.status_code == 201:
        assert [row["mnemonic"] for row in response.json()] == ["P-0001", "P-0002"]


@pytest.mark.parametrize("role", ROLES)
def test_undoing_a_batch(api, project, filled, role):
    response = api(role).post(f"/api/v1/projects/{project.pk}/batches/{filled.batch}/undo/")
    expect(response, WRITE_STATUS[role])


@pytest.mark.parametrize("role", ROLES)
def test_managing_members(api, project, people, role):
    url = f"/api/v1/projects/{project.pk}/members/"
    response = api(role).post(url, {"username": "stranger", "role": "writer"}, format="json")
    expect(response, ADMIN_STATUS[role])
    assert Membership.objects.filter(project=project, user=people["stranger"]).exists() is (
        ADMIN_STATUS[role] == 200
    )


@pytest.mark.parametrize("role", ROLES)
def test_adding_columns(api, project, role):
    url = f"/api/v1/projects/{project.pk}/columns/"
    response = api(role).post(url, {"property": "age", "entity_kind": "sample"}, format="json")
    expect(response, {**ADMIN_STATUS, "owner": 201, "admin": 201}[role])


@pytest.mark.parametrize("role", ROLES)
def test_redacting(api, project, filled, role):
    event = Event.objects.get(value="lung")
    response = api(role).post(
        f"/api/v1/projects/{project.pk}/events/{event.pk}/redact/", {"reason": "typed a name"}, format="json"
    )
    expect(response, {**ADMIN_STATUS, "owner": 201, "admin": 201}[role])


@pytest.mark.parametrize(
    ("role", "status"),
    [("anonymous", 401), ("stranger", 404), ("reader", 403), ("writer", 403), ("owner", 200), ("admin", 200)],
)
def test_renaming_a_project(api, project, role, status):
    expect(api(role).patch(f"/api/v1/projects/{project.pk}/", {"description": "new"}, format="json"), status)


@pytest.mark.parametrize("role", ROLES)
def test_directory_shows_names_to_everyone_signed_in(api, project, role):
    response = api(role).get("/api/v1/projects/directory/")
    if role == "anonymous":
        expect(response, 401)
        return
    expect(response, 200)
    assert response.json()["results"] == [
        {
            "id": project.pk,
            "name": "Lung study",
            "description": "Adenocarcinoma cohort",
            "owner": "owner",
            "created_at": response.json()["results"][0]["created_at"],
        }
    ]
    listed = api(role).get("/api/v1/projects/").json()["results"]
    assert bool(listed) is (role != "stranger")


def test_joining_through_the_api(api, project, people):
    asked = expect(
        api("stranger").post(f"/api/v1/projects/{project.pk}/join/", {"message": "hi"}, format="json"), 201
    )
    expect(api("stranger").post(f"/api/v1/projects/{project.pk}/join/", {}, format="json"), 400)
    expect(api("writer").get(f"/api/v1/projects/{project.pk}/join-requests/"), 403)
    pending = expect(api("owner").get(f"/api/v1/projects/{project.pk}/join-requests/"), 200).json()
    assert [p["user"] for p in pending] == ["stranger"]
    url = f"/api/v1/projects/{project.pk}/join-requests/{asked.json()['id']}/accept/"
    expect(api("writer").post(url, {"role": "writer"}, format="json"), 403)
    expect(api("owner").post(url, {"role": "writer"}, format="json"), 200)
    expect(api("stranger").get(f"/api/v1/projects/{project.pk}/matrix/"), 200)


def test_creating_a_project_from_a_template(api, template, people):
    created = expect(
        api("stranger").post("/api/v1/projects/", {"name": "Mouse model", "template": "tiny"}, format="json"),
        201,
    ).json()
    assert created["owner"] == "stranger" and created["role"] == "admin"
    kinds = api("stranger").get(f"/api/v1/projects/{created['id']}/kinds/").json()
    assert [k["key"] for k in kinds] == ["patient", "sample"]
    expect(api("stranger").post("/api/v1/projects/", {"name": "Mouse model"}, format="json"), 400)
    expect(api("anonymous").post("/api/v1/projects/", {"name": "x"}, format="json"), 401)


# --- what comes out ----------------------------------------------------------------------------------


def test_matrix_json_csv_and_time_travel(api, project, samples, filled, people):
    later = append_events(
        project,
        [{"entity": samples[0].pk, "property": "tissue", "value": "bronchus"}],
        author=people["writer"],
    )
    now = expect(api("reader").get(f"/api/v1/projects/{project.pk}/matrix/"), 200).json()
    rows = {r["mnemonic"]: r["values"] for r in now["rows"]}
    assert rows["S-0001"] == {"tissue": "bronchus"} and rows["S-0002"] == {"species": "homo sapiens"}
    assert {c["key"] for c in now["columns"]} == {"sex", "age", "species", "tissue"}
    at = filled.timestamp.isoformat()
    past = api("reader").get(f"/api/v1/projects/{project.pk}/matrix/", {"at": at}).json()
    assert {r["mnemonic"]: r["values"] for r in past["rows"]}["S-0001"] == {"tissue": "lung"}
    text = api("reader").get(f"/api/v1/projects/{project.pk}/matrix/", {"format": "csv"}).content.decode()
    table = list(csv.DictReader(io.StringIO(text)))
    assert table[0]["id"] == "S-0001" and table[0]["tissue"] == "bronchus"
    difference = api("reader").get(f"/api/v1/projects/{project.pk}/matrix/difference/", {"since": at}).json()
    assert difference == [
        {
            "entity": samples[0].pk,
            "mnemonic": "S-0001",
            "property": "tissue",
            "before": "lung",
            "after": "bronchus",
        }
    ]
    history = (
        api("reader")
        .get(f"/api/v1/projects/{project.pk}/entities/{samples[0].pk}/history/", {"property": "tissue"})
        .json()
    )
    assert [(h["value"], h["author"]) for h in history] == [("lung", "writer"), ("bronchus", "writer")]
    assert later.batch


def test_events_list_filters_and_cursor(api, project, samples, filled, people):
    url = f"/api/v1/projects/{project.pk}/events/"
    page = expect(api("reader").get(url, {"page_size": 1}), 200).json()
    assert len(page["results"]) == 1 and page["next"]
    assert len(api("reader").get(page["next"]).json()["results"]) == 1
    assert [e["property"] for e in api("reader").get(url, {"property": "species"}).json()["results"]] == [
        "species"
    ]
    assert api("reader").get(url, {"author": "owner"}).json()["results"] == []
    expect(api("reader").get(url, {"since": "yesterday"}), 400)
    expect(api("reader").get(url, {"batch": "nope"}), 400)


def test_appending_reports_invalid_values_but_keeps_them(api, project, samples):
    response = expect(
        api("writer").post(
            f"/api/v1/projects/{project.pk}/events/",
            {"changes": [{"entity": samples[0].pk, "property": "species", "value": "homo sapiens"}]},
            format="json",
        ),
        201,
    ).json()
    assert response["written"] == 1
    assert response["invalid"] == [
        {
            "entity": samples[0].pk,
            "property": "species",
            "message": "Not one of the options; did you mean 'Homo sapiens'?",
        }
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"changes": []},
        {"changes": [{"entity": 999, "property": "tissue", "value": 1}]},
        {"changes": [{"entity": True, "property": "tissue", "value": 1}]},
        {"changes": [{"entity": "S-0001", "property": "nope", "value": 1}]},
        {"changes": "all"},
        {"changes": [{"entity": "S-0001", "property": "tissue", "value": 1}], "extra": 1},
    ],
)
def test_bad_batches_are_refused_and_write_nothing(api, project, samples, body):
    expect(api("writer").post(f"/api/v1/projects/{project.pk}/events/", body, format="json"), 400)
    assert not Event.objects.exists()


def test_bad_query_parameters(api, project, samples):
    base = f"/api/v1/projects/{project.pk}"
    expect(api("reader").get(f"{base}/matrix/", {"at": "2026-13-01"}), 400)
    expect(api("reader").get(f"{base}/matrix/difference/"), 400)
    expect(api("reader").get(f"{base}/entities/{samples[0].pk}/history/", {"property": "nope"}), 400)
    expect(api("writer").post(f"{base}/batches/not-a-uuid/undo/"), 404)
    expect(api("writer").post(f"{base}/batches/00000000-0000-0000-0000-000000000000/undo/"), 404)
    expect(api("reader").get("/api/v1/projects/999999/matrix/"), 404)
    # Malformed ids and impossible dates are client errors too, never a 500.
    expect(api("owner").get(f"{base}/entities/abc/"), 404)
    expect(api("owner").get(f"{base}/entities/abc/history/", {"property": "tissue"}), 404)
    expect(api("owner").post(f"{base}/events/abc/redact/", {"reason": "x"}, format="json"), 404)
    expect(api("reader").get(f"{base}/matrix/", {"at": "2026-02-30T10:00:00Z"}), 400)
    expect(api("reader").get(f"{base}/events/", {"since": "2026-02-30T10:00:00Z"}), 400)


def test_catalogue_read_by_all_changed_by_admins(api, template):
    assert {p["key"] for p in expect(api("stranger").get("/api/v1/properties/"), 200).json()["results"]} >= {
        "species",
        "age",
    }
    expect(api("stranger").get("/api/v1/templates/tiny/"), 200)
    body = {"key": "stain_batch", "label": "Stain batch", "type": "choice", "options": [{"value": "H&E"}]}
    expect(api("owner").post("/api/v1/properties/", body, format="json"), 403)
    expect(api("admin").post("/api/v1/properties/", body, format="json"), 201)
    expect(api("admin").post("/api/v1/properties/", {**body, "key": "x", "regex": "("}, format="json"), 400)
    expect(api("admin").delete("/api/v1/properties/species/"), 400)  # used by a template
    expect(api("anonymous").get("/api/v1/properties/"), 401)


def test_deleting_a_project_with_history_is_refused(api, project, filled):
    expect(api("owner").delete(f"/api/v1/projects/{project.pk}/"), 400)
    assert Project.objects.filter(pk=project.pk).exists()


@pytest.mark.parametrize(
    "path", ["", "members/", "kinds/", "columns/", "entities/", "events/", "matrix/", "batches/"]
)
def test_list_queries_do_not_grow_with_rows(api, project, samples, people, path):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from metadata.services.entities import create_entities
    from metadata.services.projects import set_member
    from portal.models import User

    def count() -> int:
        with CaptureQueriesContext(connection) as captured:
            expect(api("reader").get(f"/api/v1/projects/{project.pk}/{path}"), 200)
        return len(captured.captured_queries)

    def grow(n: int) -> None:
        rows = create_entities(project.entity_kinds.get(key="sample"), n)
        append_events(
            project,
            [{"entity": r.pk, "property": "tissue", "value": f"t{r.pk}"} for r in rows],
            author=people["writer"],
        )
        for index in range(n):
            set_member(
                project, User.objects.create_user(f"m{rows[0].pk}-{index}"), "reader", actor=people["owner"]
            )

    grow(2)
    few = count()
    grow(15)
    assert count() == few
