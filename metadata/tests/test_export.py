"""Exporting the sheet (CSV, XLSX, JSON; now and at a past moment) and the event history."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import openpyxl
import pytest

from metadata.models import Event
from metadata.services import exporting, importing
from metadata.services.entities import create_entities
from metadata.services.events import append_events, redact_event
from portal.models import AuditEvent

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "stranger", "reader", "writer", "owner", "admin"]
READ_STATUS = {"anonymous": 401, "stranger": 404, "reader": 200, "writer": 200, "owner": 200, "admin": 200}
PAGE_STATUS = {**READ_STATUS, "anonymous": 302}
XLSX = exporting.FORMATS["xlsx"]




@pytest.fixture
def history(project, samples, people):
    """Two batches on samples, a patient with an age, and a redacted value."""
    patient = create_entities(project.entity_kinds.get(key="patient"), user=people["writer"])[0]
    first = append_events(
        project,
        [
            {"entity": samples[0].pk, "property": "tissue", "value": "lung"},
            {"entity": samples[1].pk, "property": "species", "value": "Homo sapiens"},
            {"entity": samples[2].pk, "property": "tissue", "value": '=HYPERLINK("x")'},
            {"entity": patient.pk, "property": "age", "value": "42"},
        ],
        author=people["writer"],
        comment="first",
    )
    second = append_events(
        project,
        [
            {"entity": samples[0].pk, "property": "tissue", "value": "bronchus"},
            {"entity": samples[1].pk, "property": "species", "value": "John Doe"},
        ],
        author=people["owner"],
        comment="second",
    )
    mistake = Event.objects.get(value="John Doe")
    redact_event(mistake, actor=people["owner"], reason="a name")
    return {"first": first, "second": second, "patient": patient}


def expect(response, status: int):
    assert response.status_code == status, getattr(response, "content", b"")[:500]
    if status >= 400 and response["Content-Type"].startswith("application/json"):
        body = response.json()
        assert body["detail"] and body["code"], body
    return response


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


# --- what comes out ------------------------------------------------------------------------------


def test_csv_now_and_in_the_past(api, project, history):
    url = f"/api/v1/projects/{project.pk}/export/"
    response = expect(api("reader").get(url, {"format": "csv"}), 200)
    assert response["Content-Type"].startswith("text/csv")
    assert 'attachment; filename="lung-study-sheet.csv"' == response["Content-Disposition"]
    text = response.content.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["id", "kind", "parent", "sex", "age", "species", "tissue"]
    by_id = {r["id"]: r for r in rows}
    assert by_id["P-0001"]["age"] == "42" and by_id["P-0001"]["kind"] == "patient"
    assert by_id["S-0001"]["tissue"] == "bronchus"
    assert "John Doe" not in text  # the redacted value is gone
    assert by_id["S-0003"]["tissue"] == '\'=HYPERLINK("x")'  # no formula for spreadsheets

    at = history["first"].timestamp.isoformat()
    past = expect(api("reader").get(url, {"format": "csv", "at": at}), 200)
    assert "-at-" in past["Content-Disposition"]
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(past.content.decode("utf-8-sig")))}
    assert rows["S-0001"]["tissue"] == "lung"
    before = (history["first"].timestamp - dt.timedelta(seconds=1)).isoformat()
    rows = list(
        csv.DictReader(io.StringIO(api("reader").get(url, {"at": before}).content.decode("utf-8-sig")))
    )
    assert all(not r["tissue"] for r in rows)


def test_xlsx(api, project, history):
    url = f"/api/v1/projects/{project.pk}/export/"
    response = expect(api("reader").get(url, {"format": "xlsx"}), 200)
    assert response["Content-Type"] == XLSX
    workbook = openpyxl.load_workbook(io.BytesIO(response.content))
    assert workbook.sheetnames == ["Sheet", "Columns", "About"]
    rows = list(workbook["Sheet"].iter_rows(values_only=True))
    assert rows[0] == (
        "id",
        "kind",
        "parent",
        "Sex [sex]",
        "Age (years) [age]",
        "Species [species]",
        "Tissue [tissue]",
    )
    by_id = {r[0]: r for r in rows[1:]}
    assert by_id["P-0001"][4] == 42 and by_id["S-0001"][6] == "bronchus"
    formula_cell = workbook["Sheet"].cell(row=[r[0] for r in rows].index("S-0003") + 1, column=7)
    assert formula_cell.data_type == "s" and formula_cell.value == '=HYPERLINK("x")'
    about = dict(workbook["About"].iter_rows(values_only=True))
    assert about["Project"] == "Lung study" and about["Exported by"] == "reader"
    columns = list(workbook["Columns"].iter_rows(values_only=True))
    assert columns[3][:4] == ("species", "Species", "sample", "choice")

    at = history["first"].timestamp.isoformat()
    past = openpyxl.load_workbook(io.BytesIO(api("reader").get(url, {"format": "xlsx", "at": at}).content))
    rows = {r[0]: r for r in past["Sheet"].iter_rows(values_only=True)}
    assert rows["S-0001"][6] == "lung" and rows["S-0002"][5] == "Homo sapiens"
    assert (
        dict(past["About"].iter_rows(values_only=True))["Sheet as of"]
        == history["first"].timestamp.isoformat()
    )


def test_json(api, project, history):
    url = f"/api/v1/projects/{project.pk}/export/"
    document = json.loads(expect(api("reader").get(url, {"format": "json"}), 200).content)
    assert document["project"] == {"id": project.pk, "name": "Lung study"} and document["at"] is None
    rows = {r["mnemonic"]: r for r in document["rows"]}
    assert rows["S-0001"]["values"] == {"tissue": "bronchus"}
    assert rows["P-0001"]["values"] == {"age": 42} and "John Doe" not in json.dumps(document)
    assert {c["key"]: c["kinds"] for c in document["columns"]}["tissue"] == ["sample"]
    past = json.loads(api("reader").get(url, {"format": "json", "at": history["first"].timestamp}).content)
    assert {r["mnemonic"]: r["values"] for r in past["rows"]}["S-0001"] == {"tissue": "lung"}
    assert past["at"].startswith(history["first"].timestamp.strftime("%Y-%m-%dT%H:%M:%S"))


def test_history(api, project, history, people):
    response = expect(api("reader").get(f"/api/v1/projects/{project.pk}/events/export/"), 200)
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="lung-study-history.json"'
    document = json.loads(body(response))
    events = document["events"]
    assert document["count"] == len(events) == Event.objects.filter(project=project).count() == 7
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    first = next(e for e in events if e["entity"] == "S-0001" and e["value"] == "lung")
    assert first["author"] == "writer" and first["comment"] == "first" and first["kind"] == "set"
    assert first["batch"] == str(history["first"].batch) and first["property"] == "tissue"
    assert first["timestamp"].startswith(history["first"].timestamp.strftime("%Y-%m-%dT%H:%M:%S"))
    redacted = next(e for e in events if e["redacted"])
    assert redacted["value"] is None and redacted["author"] == "owner"
    tombstone = next(e for e in events if e["kind"] == "redaction")
    assert tombstone["target"] == redacted["id"] and tombstone["comment"] == "a name"
    assert "John Doe" not in body(response).decode()
    assert AuditEvent.objects.filter(action="metadata.history_exported").count() == 1


def test_exported_files_import_back_without_changes(api, project, history, people):
    for fmt, name in (("csv", "sheet.csv"), ("xlsx", "sheet.xlsx")):
        content = api("writer").get(f"/api/v1/projects/{project.pk}/export/", {"format": fmt}).content
        draft, _ = importing.create_draft(project, people["writer"], name=name, data=content)
        preview = importing.preview_draft(project, draft)
        assert preview["unknown_columns"] == [], fmt
        assert [c["target"] for c in preview["columns"]] == [
            "@id",
            "@kind",
            "@parent",
            "sex",
            "age",
            "species",
            "tissue",
        ]
        counts = preview["counts"]
        assert counts["changed_cells"] == 0 and counts["new_rows"] == 0 and counts["skipped_rows"] == 0, fmt
        stored = sum(len(r["values"]) for r in exporting.matrix_sheet(project).rows)
        assert counts["unchanged_cells"] == stored >= 3, fmt  # formula-like text comes back as it was


def test_empty_project_exports(api, project):
    for fmt in ("csv", "xlsx", "json"):
        expect(api("owner").get(f"/api/v1/projects/{project.pk}/export/", {"format": fmt}), 200)
    document = json.loads(body(api("owner").get(f"/api/v1/projects/{project.pk}/events/export/")))
    assert document["events"] == [] and document["count"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"format": "pdf"},
        {"format": "csv", "at": "yesterday"},
        {"format": "xlsx", "at": "2026-02-30T10:00:00Z"},
        {"format": "json", "at": "2026-05-01T10:00:00"},  # no time zone
        {"format": "json", "at": "0001-01-01T00:00:00+05:00"},  # before the year 1 in UTC
        {"format": "csv", "at": "9999-12-31T23:59:59-05:00"},
    ],
)
def test_bad_export_parameters_get_400(api, project, history, params):
    response = expect(api("reader").get(f"/api/v1/projects/{project.pk}/export/", params), 400)
    assert response["Content-Type"] == "application/json"


def test_unknown_project_is_404(api):
    expect(api("admin").get("/api/v1/projects/999999/export/", {"format": "csv"}), 404)
    expect(api("admin").get("/api/v1/projects/999999/events/export/"), 404)


# --- who may do what ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "path", ["export/?format=csv", "export/?format=xlsx", "export/?format=json", "events/export/"]
)
def test_exports_per_role(api, project, history, role, path):
    response = expect(api(role).get(f"/api/v1/projects/{project.pk}/{path}"), READ_STATUS[role])
    if response.status_code == 200:
        assert response["Content-Disposition"].startswith("attachment;")
        assert AuditEvent.objects.filter(action__startswith="metadata.").exists()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "path", ["export/", "export/download/?format=csv", "export/download/?format=xlsx", "export/history/"]
)
def test_export_pages_per_role(web, project, history, role, path):
    response = web(role).get(f"/projects/{project.pk}/{path}")
    assert response.status_code == PAGE_STATUS[role]
    if role == "anonymous":
        assert response["Location"].startswith("/accounts/login/")


def test_export_page_links_and_past_moments(web, project, history):
    client = web("reader")
    html = client.get(f"/projects/{project.pk}/export/").content.decode()
    assert f"/projects/{project.pk}/export/download/?format=xlsx" in html
    assert f"/projects/{project.pk}/export/history/" in html
    assert f"/projects/{project.pk}/import/" not in html  # readers cannot import
    assert (
        f"/projects/{project.pk}/import/"
        in web("writer").get(f"/projects/{project.pk}/export/").content.decode()
    )
    moment = history["first"].timestamp.astimezone(dt.UTC).replace(tzinfo=None).isoformat()
    response = client.get(f"/projects/{project.pk}/export/download/", {"format": "json", "at": moment})
    assert response.status_code == 200
    assert {r["mnemonic"]: r["values"] for r in json.loads(response.content)["rows"]}["S-0001"] == {
        "tissue": "lung"
    }
    history_json = json.loads(body(client.get(f"/projects/{project.pk}/export/history/")))
    assert history_json["count"] == 7
    for params in ({"format": "pdf"}, {"format": "csv", "at": "noon"}, {"at": "0001-01-01T00:00+05:00"}):
        response = client.get(f"/projects/{project.pk}/export/download/", params)
        assert response.status_code == 400 and "transfer-alert" in response.content.decode()
