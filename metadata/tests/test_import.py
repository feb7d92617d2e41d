"""Importing CSV, TSV and XLSX files: preview (writes nothing), confirm (one batch), drafts, roles."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
from pathlib import Path

import openpyxl
import pytest

from metadata.models import Entity, Event
from metadata.services import importing
from metadata.services.entities import create_entities
from metadata.services.events import append_events
from metadata.services.matrix import events_as_matrix
from metadata.services.projects import create_project, set_member

pytestmark = pytest.mark.django_db

DATA = Path(__file__).parent / "data"
ROLES = ["anonymous", "stranger", "reader", "writer", "owner", "admin"]
UPLOAD_STATUS = {"anonymous": 401, "stranger": 404, "reader": 403, "writer": 201, "owner": 201, "admin": 201}




def expect(response, status: int):
    assert response.status_code == status, response.content[:800]
    if status >= 400 and response["Content-Type"].startswith("application/json"):
        body = response.json()
        assert body["detail"] and body["code"], body
    return response


def upload(client, project, name: str, data: bytes, **extra):
    return client.post(
        f"/api/v1/projects/{project.pk}/imports/",
        {"file": io.BytesIO(data) if not name else named(data, name), **extra},
        format="multipart",
    )


def named(data: bytes, name: str):
    handle = io.BytesIO(data)
    handle.name = name
    return handle


def messy() -> bytes:
    return (DATA / "messy_latin1.csv").read_bytes()


def draft_files(settings) -> list[Path]:
    folder = Path(settings.PORTAL_DATA_DIR) / "imports"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def xlsx_bytes(rows: list[list]) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Lab data"
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# --- the acceptance case: a messy CSV ---------------------------------------------------------------


def test_messy_csv_gets_a_clear_preview_and_writes_nothing(api, project, samples, settings):
    append_events(project, [{"entity": samples[0].pk, "property": "tissue", "value": "Lunge"}], author=None)
    events, entities = Event.objects.count(), Entity.objects.count()

    preview = expect(upload(api("writer"), project, "messy_latin1.csv", messy()), 201).json()

    assert preview["format"] == "csv" and preview["delimiter"] == ";"
    assert "1252" in preview["encoding"]
    targets = {c["header"]: c["target"] for c in preview["columns"]}
    assert targets["Sample ID"] == "@id"
    assert targets["Species"] == "species" and targets["TISSUE"] == "tissue"
    assert preview["unknown_columns"] == ["Comment", "Opérateur"]  # Latin-1 read correctly
    assert {m["key"] for m in preview["missing_columns"]} == {"sex", "age"}
    counts = preview["counts"]
    assert counts["rows"] == 6 and counts["empty_rows"] == 3
    assert counts["new_rows"] == 3 and counts["updated_rows"] == 2 and counts["skipped_rows"] == 1
    assert counts["unchanged_cells"] == 1  # S-0001 tissue is "Lunge" already
    suggested = {(s["value"], s["suggestion"], s["reason"]) for s in preview["suggestions"]}
    assert suggested == {
        ("homo sapiens", "Homo sapiens", "case"),
        ("Homo Sapiens", "Homo sapiens", "case"),
        ("Homo sapien", "Homo sapiens", "spelling"),
    }
    assert not any(s["accepted"] for s in preview["suggestions"])
    invalid = {(c["row"], c["value"], c["message"]) for c in preview["invalid_cells"]}
    assert (8, "Canis lupus", "Not one of the options.") in invalid
    assert counts["invalid_cells"] == 4  # the three variants stay invalid until accepted
    errors = [p for p in preview["problems"] if p["level"] == "error"]
    assert errors == [{"row": 9, "level": "error", "message": errors[0]["message"]}]
    assert "S-0099" in errors[0]["message"]
    assert [r["action"] for r in preview["rows"]] == ["update", "update", "new", "new", "new"]

    again = expect(
        api("writer").get(f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/"), 200
    ).json()
    assert again["counts"] == counts
    assert Event.objects.count() == events and Entity.objects.count() == entities
    assert len(draft_files(settings)) == 2  # the file and its sidecar


def test_confirming_writes_exactly_one_batch(api, project, samples, settings):
    preview = expect(upload(api("writer"), project, "messy_latin1.csv", messy()), 201).json()
    url = f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/"
    accepted = expect(
        api("writer").post(url + "preview/", {"all_suggestions": True}, format="json"), 200
    ).json()
    assert accepted["counts"]["invalid_cells"] == 1 and all(s["accepted"] for s in accepted["suggestions"])
    assert Event.objects.count() == 0

    result = expect(
        api("writer").post(url + "confirm/", {"all_suggestions": True}, format="json"), 201
    ).json()

    assert result["created_rows"] == 3 and result["created"] == ["S-0004", "S-0005", "S-0006"]
    assert result["updated_rows"] == 2 and result["written"] == 10 and result["invalid"] == 1
    assert Event.objects.values("batch").distinct().count() == 1
    assert set(Event.objects.values_list("comment", flat=True)) == {"Import of messy_latin1.csv"}
    assert str(Event.objects.first().batch) == result["batch"]
    assert set(Event.objects.values_list("author__username", flat=True)) == {"writer"}
    matrix = events_as_matrix(project)
    by_id = {e.mnemonic: e.pk for e in matrix.entities}
    assert matrix.values[by_id["S-0001"]] == {"species": "Homo sapiens", "tissue": "Lunge"}
    assert matrix.values[by_id["S-0002"]] == {"species": "Homo sapiens", "tissue": "lung"}
    assert matrix.values[by_id["S-0004"]] == {"species": "Mus musculus", "tissue": "Milz"}
    assert matrix.values[by_id["S-0006"]] == {"species": "Canis lupus", "tissue": "Leber"}
    assert Entity.objects.get(mnemonic="S-0004").created_by.username == "writer"
    # The draft is gone: confirming twice cannot import twice.
    expect(api("writer").post(url + "confirm/", {}, format="json"), 404)
    assert draft_files(settings) == []


def test_only_the_chosen_suggestions_are_applied(api, project, samples):
    preview = expect(upload(api("writer"), project, "messy_latin1.csv", messy()), 201).json()
    chosen = next(s for s in preview["suggestions"] if s["value"] == "Homo sapien")
    url = f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/confirm/"
    expect(api("writer").post(url, {"suggestions": [chosen["id"], "not-an-id"]}, format="json"), 201)
    species = dict(Event.objects.filter(property__key="species").values_list("entity__mnemonic", "value"))
    assert species["S-0002"] == "Homo sapiens"  # accepted
    assert species["S-0001"] == "homo sapiens"  # kept as typed (and shown as invalid)
    assert species["S-0005"] == "Homo Sapiens"


def test_confirm_with_an_overridden_mapping(api, project, samples):
    preview = expect(upload(api("writer"), project, "messy_latin1.csv", messy()), 201).json()
    index = {c["header"]: str(c["index"]) for c in preview["columns"]}
    mapping = {index["Comment"]: "tissue", index["TISSUE"]: "", index["Species"]: ""}
    url = f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/"
    changed = expect(api("writer").post(url + "preview/", {"mapping": mapping}, format="json"), 200).json()
    assert {c["header"]: c["target"] for c in changed["columns"]}["Comment"] == "tissue"
    assert changed["unknown_columns"] == ["Species", "TISSUE", "Opérateur"]
    assert changed["counts"]["changed_cells"] == 2
    expect(api("writer").post(url + "confirm/", {"mapping": mapping}, format="json"), 201)
    written = dict(Event.objects.values_list("entity__mnemonic", "value"))
    assert written == {"S-0001": "café au lait", "S-0004": "neu"}
    assert not Event.objects.filter(property__key="species").exists()


@pytest.mark.parametrize(
    "mapping",
    [
        {"0": "nonsense"},
        {"99": "tissue"},
        {"No such header": "tissue"},
        {"1": "tissue"},  # TISSUE maps to tissue as well
        {"3": "@id"},
    ],
)
def test_bad_mappings_are_refused_and_write_nothing(api, project, samples, mapping):
    preview = expect(upload(api("writer"), project, "messy_latin1.csv", messy()), 201).json()
    url = f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/"
    expect(api("writer").post(url + "preview/", {"mapping": mapping}, format="json"), 400)
    expect(api("writer").post(url + "confirm/", {"mapping": mapping}, format="json"), 400)
    assert not Event.objects.exists() and Entity.objects.count() == 3
    expect(api("writer").get(url), 200)  # the draft is kept to try again


@pytest.mark.parametrize(
    "body",
    [
        {"default_kind": "alien"},
        {"suggestions": "all"},
        {"mapping": ["species"]},
        {"unknown": 1},
        {"clear_empty": "perhaps"},
    ],
)
def test_bad_options_get_400(api, project, samples, body):
    preview = expect(upload(api("writer"), project, "messy_latin1.csv", messy()), 201).json()
    url = f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/confirm/"
    expect(api("writer").post(url, body, format="json"), 400)
    assert not Event.objects.exists()


def test_utf8_with_bom(api, project, samples):
    preview = expect(
        upload(api("writer"), project, "bom_utf8.csv", (DATA / "bom_utf8.csv").read_bytes()), 201
    )
    preview = preview.json()
    assert preview["encoding"] == "UTF-8 with BOM" and preview["delimiter"] == ","
    assert preview["columns"][0]["header"] == "id" and preview["columns"][0]["target"] == "@id"
    assert preview["unknown_columns"] == ["notes"]
    url = f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/confirm/"
    expect(api("writer").post(url, {}, format="json"), 201)
    matrix = events_as_matrix(project)
    assert matrix.values[samples[2].pk] == {"species": "Mus musculus", "tissue": "Gehirn (Groß)"}


def test_xlsx_with_kinds_and_parents(api, project, samples):
    patient = create_entities(project.entity_kinds.get(key="patient"))[0]
    data = xlsx_bytes(
        [
            ["id", "kind", "parent", "Species [species]", "Age (years)", "Sex", "Taken on"],
            [None, "Patient", None, None, 42.0, "Female", dt.datetime(2026, 1, 5)],
            [],
            [None, "sample", patient.mnemonic, "Mus musculus", None, None, None],
            [samples[0].mnemonic, None, None, "Homo sapiens", None, None, None],
            [None, "sample", "P-0404", "Mus musculus", None, None, None],
            [None, "organ", None, "Mus musculus", None, None, None],
            [None, "patient", patient.mnemonic, None, 3, None, None],
            [None, "sample", samples[1].mnemonic, None, None, None, None],
        ]
    )
    preview = expect(upload(api("owner"), project, "lab.xlsx", data), 201).json()
    assert preview["format"] == "xlsx" and preview["sheet"] == "Lab data"
    targets = [c["target"] for c in preview["columns"]]
    assert targets == ["@id", "@kind", "@parent", "species", "age", "sex", ""]
    assert preview["unknown_columns"] == ["Taken on"]
    assert {(s["value"], s["suggestion"]) for s in preview["suggestions"]} == {("Female", "female")}
    messages = [p["message"] for p in preview["problems"] if p["level"] == "error"]
    assert len(messages) == 4
    assert "No row 'P-0404'" in messages[0] and "Unknown kind of row 'organ'" in messages[1]
    assert "Patient rows have no parent row" in messages[2] and "belongs to a patient" in messages[3]
    url = f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/confirm/"
    result = expect(api("owner").post(url, {"all_suggestions": True}, format="json"), 201).json()
    assert result["created"] == ["P-0002", "S-0004"]
    new_sample = Entity.objects.get(mnemonic="S-0004")
    assert new_sample.parent == patient and new_sample.kind.key == "sample"
    matrix = events_as_matrix(project)
    assert matrix.values[Entity.objects.get(mnemonic="P-0002").pk] == {"age": 42, "sex": "female"}
    assert type(matrix.values[Entity.objects.get(mnemonic="P-0002").pk]["age"]) is int


def test_default_kind_and_clearing_by_empty_cells(api, project, samples):
    append_events(
        project,
        [
            {"entity": samples[0].pk, "property": "tissue", "value": "lung"},
            {"entity": samples[0].pk, "property": "species", "value": "Mus musculus"},
        ],
        author=None,
    )
    data = b"mnemonic\ttissue\tspecies\nS-0001\t\tMus musculus\n\tliver\t\n"
    preview = expect(upload(api("writer"), project, "rows.tsv", data, default_kind="sample"), 201).json()
    assert preview["format"] == "tsv" and preview["options"]["default_kind"] == "sample"
    assert preview["counts"]["changed_cells"] == 1 and preview["counts"]["unchanged_cells"] == 1
    url = f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/"
    cleared = expect(api("writer").post(url + "preview/", {"clear_empty": True}, format="json"), 200).json()
    assert cleared["counts"]["cleared_cells"] == 1 and cleared["counts"]["changed_cells"] == 2
    patients = expect(
        api("writer").post(url + "preview/", {"default_kind": "patient"}, format="json"), 200
    ).json()
    assert patients["counts"]["new_rows"] == 1 and patients["counts"]["ignored_cells"] == 1
    expect(api("writer").post(url + "confirm/", {"clear_empty": True}, format="json"), 201)
    matrix = events_as_matrix(project)
    assert matrix.values[samples[0].pk] == {"species": "Mus musculus"}


def test_suggestions_from_values_in_use_and_repeated_columns(api, project, samples):
    append_events(project, [{"entity": samples[0].pk, "property": "tissue", "value": "lung"}], author=None)
    data = b"id,Tissue,tissue_,species\nS-0002,LUNG,x,Mus musculus\nS-0003,Lung , y,mus Musculus\n"
    preview = expect(upload(api("writer"), project, "a.csv", data), 201).json()
    suggested = {(s["property"], s["value"], s["suggestion"], s["count"]) for s in preview["suggestions"]}
    assert suggested == {
        ("tissue", "LUNG", "lung", 1),
        ("tissue", "Lung", "lung", 1),
        ("species", "mus Musculus", "Mus musculus", 1),
    }
    assert [c["target"] for c in preview["columns"]] == ["@id", "tissue", "", "species"]
    warnings = [p["message"] for p in preview["problems"]]
    assert any("“tissue_” also matches Tissue (tissue)" in w for w in warnings), warnings


def test_a_failure_while_writing_rolls_everything_back(api, project, samples, monkeypatch):
    from metadata.services import events as event_service

    def refuse(*args, **kwargs):
        raise event_service.EventError("The sheet changed meanwhile.", {"0": ["No such column."]})

    preview = expect(upload(api("writer"), project, "messy_latin1.csv", messy()), 201).json()
    monkeypatch.setattr(event_service, "append_events", refuse)
    url = f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/"
    response = expect(api("writer").post(url + "confirm/", {}, format="json"), 400)
    assert "changed meanwhile" in json.dumps(response.json())
    assert Entity.objects.count() == 3 and not Event.objects.exists()
    assert project.entity_kinds.get(key="sample").next_number == 4  # numbering rolled back too
    monkeypatch.undo()
    expect(api("writer").post(url + "confirm/", {}, format="json"), 201)  # the draft was kept
    assert Entity.objects.count() == 6


def test_a_file_without_changes_writes_nothing(api, project, samples):
    append_events(project, [{"entity": samples[0].pk, "property": "tissue", "value": "lung"}], author=None)
    events = Event.objects.count()
    preview = expect(upload(api("writer"), project, "same.csv", b"id,tissue\nS-0001,lung\n"), 201).json()
    assert preview["counts"]["changed_cells"] == 0 and preview["counts"]["unchanged_rows"] == 1
    url = f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/confirm/"
    response = expect(api("writer").post(url, {}, format="json"), 400)
    assert "Nothing to import" in response.json()["detail"]
    assert Event.objects.count() == events


# --- broken files, limits ------------------------------------------------------------------------------


def truncated_xlsx() -> bytes:
    data = xlsx_bytes([["id", "tissue"], ["S-0001", "lung"]])
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("empty.csv", b"", "empty"),
        ("blank.csv", b" \r\n\r\n  ", "empty"),
        ("random.csv", random.Random(7).randbytes(4000), "does not look like"),
        ("broken.xlsx", truncated_xlsx(), "cannot be read"),
        ("zip.xlsx", b"PK\x03\x04" + b"\x00" * 100, "cannot be read"),
        ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, "old Excel"),
        ("header.csv", b"id,tissue\n,\n", "no rows of data"),
        ("utf16.csv", b"\xff\xfe" + "id,tissue\n".encode("utf-16-le") + b"\x00\xd8", "not valid UTF-16"),
    ],
)
def test_broken_files_get_a_clear_message(api, project, samples, settings, name, data, message):
    response = expect(upload(api("writer"), project, name, data), 400)
    text = json.dumps(response.json())
    assert message in text, text
    assert not Event.objects.exists() and draft_files(settings) == []


def test_missing_file_field_and_json_body(api, project):
    expect(api("writer").post(f"/api/v1/projects/{project.pk}/imports/", {}, format="multipart"), 400)
    expect(api("writer").post(f"/api/v1/projects/{project.pk}/imports/", {"file": "x"}, format="json"), 400)
    expect(upload(api("writer"), project, "a.csv", b"id,tissue\n,lung\n", default_kind="alien"), 400)
    assert not Entity.objects.exists()


def test_malformed_bodies_get_4xx(api, project, samples, settings):
    client = api("writer")
    base = f"/api/v1/projects/{project.pk}/imports/"
    draft = expect(upload(client, project, "m.csv", messy()), 201).json()["draft"]
    for url in (base, f"{base}{draft}/preview/", f"{base}{draft}/confirm/"):
        for text in ('{"mapping": ', "[1, 2, 3]", '"text"', "null"):
            response = client.post(url, text, content_type="application/json")
            assert 400 <= response.status_code < 500, (url, text, response.status_code)
        huge = '{"mapping": {"0": "' + "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + '"}}'
        expect(client.post(url, huge, content_type="application/json"), 413)
    expect(client.post(f"{base}{draft}/confirm/", "a=b", content_type="text/plain"), 415)
    assert not Event.objects.exists() and Entity.objects.count() == 3
    expect(client.get(f"{base}{draft}/"), 200)


def test_the_kind_chosen_at_upload_is_kept(api, project):
    client = api("writer")
    preview = expect(upload(client, project, "a.csv", b"tissue\nlung\n", default_kind="patient"), 201).json()
    assert preview["options"]["default_kind"] == "patient" and preview["counts"]["ignored_cells"] == 1
    url = f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/"
    assert expect(client.get(url), 200).json()["options"]["default_kind"] == "patient"
    samples = expect(client.post(url + "preview/", {"default_kind": "sample"}, format="json"), 200).json()
    assert samples["options"]["default_kind"] == "sample" and samples["counts"]["changed_cells"] == 1


def test_workbooks_that_unpack_too_large_are_refused(api, project, monkeypatch, settings):
    monkeypatch.setattr(importing.reading, "MAX_XLSX_UNPACKED", 1000)
    response = expect(upload(api("writer"), project, "big.xlsx", xlsx_bytes([["tissue"], ["lung"]])), 400)
    assert "more than 0 MB of data" in response.json()["detail"] and draft_files(settings) == []


def test_size_and_row_limits(api, project, settings, monkeypatch):
    monkeypatch.setattr(importing.reading, "MAX_ROWS", 3)
    rows = b"tissue\n" + b"lung\n" * 4
    assert "more than 3 rows" in expect(upload(api("writer"), project, "a.csv", rows), 400).json()["detail"]
    monkeypatch.setattr(importing.reading, "MAX_FILE_BYTES", 10)
    response = expect(upload(api("writer"), project, "a.csv", b"tissue\nlung\nliver\n"), 413)
    assert "larger than" in response.json()["detail"]
    assert draft_files(settings) == []


def test_too_many_open_drafts(api, project, monkeypatch):
    monkeypatch.setattr(importing.drafts, "MAX_OPEN_DRAFTS", 2)
    for _ in range(2):
        expect(upload(api("writer"), project, "a.csv", b"tissue\nlung\n"), 201)
    response = expect(upload(api("writer"), project, "a.csv", b"tissue\nlung\n"), 400)
    assert "imports waiting" in response.json()["detail"]
    expect(upload(api("owner"), project, "a.csv", b"tissue\nlung\n"), 201)  # per user


# --- drafts belong to their uploader and project, and expire ----------------------------------------------


def test_drafts_of_other_users_and_projects_are_404(api, project, samples, people):
    preview = expect(upload(api("writer"), project, "messy_latin1.csv", messy()), 201).json()
    draft = preview["draft"]
    other = create_project(name="Other", owner=people["owner"])
    set_member(other, people["writer"], "writer", actor=people["owner"])
    base = f"/api/v1/projects/{project.pk}/imports/"
    for role in ("owner", "admin"):
        expect(api(role).get(base + f"{draft}/"), 404)
        expect(api(role).post(base + f"{draft}/confirm/", {}, format="json"), 404)
        expect(api(role).delete(base + f"{draft}/"), 404)
    elsewhere = f"/api/v1/projects/{other.pk}/imports/{draft}/"
    expect(api("writer").get(elsewhere), 404)
    expect(api("writer").post(elsewhere + "confirm/", {}, format="json"), 404)
    for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000", "..%2F..%2Fetc"):
        expect(api("writer").get(base + f"{bad}/"), 404)
    assert not Event.objects.exists()
    expect(api("writer").get(base + f"{draft}/"), 200)


def test_expired_drafts_are_gone(api, project, samples, settings):
    preview = expect(upload(api("writer"), project, "messy_latin1.csv", messy()), 201).json()
    sidecar = Path(settings.PORTAL_DATA_DIR) / "imports" / f"{preview['draft']}.json"
    meta = json.loads(sidecar.read_text())
    meta["created_at"] = (
        dt.datetime.now(dt.UTC) - importing.DRAFT_LIFETIME - dt.timedelta(minutes=1)
    ).isoformat()
    sidecar.write_text(json.dumps(meta))
    url = f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/"
    response = expect(api("writer").post(url + "confirm/", {}, format="json"), 410)
    assert "expired" in response.json()["detail"]
    assert draft_files(settings) == [] and not Event.objects.exists()
    expect(api("writer").get(url), 404)


def test_expired_drafts_are_swept_on_upload(api, project, settings):
    first = expect(upload(api("writer"), project, "a.csv", b"tissue\nlung\n"), 201).json()
    sidecar = Path(settings.PORTAL_DATA_DIR) / "imports" / f"{first['draft']}.json"
    meta = json.loads(sidecar.read_text())
    meta["created_at"] = "2000-01-01T00:00:00+00:00"
    sidecar.write_text(json.dumps(meta))
    expect(upload(api("owner"), project, "b.csv", b"tissue\nlung\n"), 201)
    assert len(draft_files(settings)) == 2 and not sidecar.exists()


def test_discarding_a_draft(api, project, settings):
    preview = expect(upload(api("writer"), project, "a.csv", b"tissue\nlung\n"), 201).json()
    url = f"/api/v1/projects/{project.pk}/imports/{preview['draft']}/"
    expect(api("writer").delete(url), 204)
    assert draft_files(settings) == []
    expect(api("writer").get(url), 404)


# --- who may do what (API) ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_uploading(api, project, samples, role, settings):
    expect(upload(api(role), project, "messy_latin1.csv", messy()), UPLOAD_STATUS[role])
    assert bool(draft_files(settings)) is (UPLOAD_STATUS[role] == 201)
    assert not Event.objects.exists()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("method", "suffix", "ok"),
    [("get", "", 200), ("post", "preview/", 200), ("post", "confirm/", 201), ("delete", "", 204)],
)
def test_draft_endpoints(api, project, samples, people, role, method, suffix, ok):
    user = people[role] or people["stranger"]
    draft, _ = importing.create_draft(project, user, name="messy.csv", data=messy())
    url = f"/api/v1/projects/{project.pk}/imports/{draft.id}/{suffix}"
    status = {**UPLOAD_STATUS, "writer": ok, "owner": ok, "admin": ok}[role]
    kwargs = {"data": {}, "format": "json"} if method == "post" else {}
    expect(getattr(api(role), method)(url, **kwargs), status)
    assert Event.objects.exists() is (suffix == "confirm/" and status == 201)


# --- pages -----------------------------------------------------------------------------------------------


def test_import_pages_upload_preview_confirm(web, project, samples):
    client = web("writer")
    page = client.get(f"/projects/{project.pk}/import/")
    assert page.status_code == 200 and "csrfmiddlewaretoken" in page.content.decode()
    response = client.post(f"/projects/{project.pk}/import/", {"file": named(messy(), "messy_latin1.csv")})
    assert response.status_code == 302
    preview_url = response["Location"]
    html = client.get(preview_url).content.decode()
    for text in (
        "Nothing has been saved yet",
        "Opérateur",
        "homo sapiens",
        "Homo sapien",
        "Canis lupus",
        "Not one of the options.",
        "S-0099",
        'name="map-0"',
        "Age",
        'data-count="new_rows">3<',
    ):
        assert text in html, text
    assert html.count('name="suggestion"') == 3 and html.count("checked") >= 3
    assert not Event.objects.exists()
    # Ignore the species column, keep one suggestion … then confirm.
    form = {"options": "1", "default_kind": "sample", "map-0": "@id", "map-1": "", "map-2": "tissue"}
    form.update({"map-3": "", "map-4": "", "action": "preview"})
    updated = client.post(preview_url, form)
    assert updated.status_code == 200 and 'data-count="changed_cells">5<' in updated.content.decode()
    assert not Event.objects.exists()
    done = client.post(preview_url, {**form, "action": "confirm"})
    assert done.status_code == 302
    assert Event.objects.values("batch").distinct().count() == 1 and Event.objects.count() == 5
    assert client.get(preview_url).status_code == 404


def test_import_page_reports_a_broken_file(web, project, settings):
    client = web("writer")
    response = client.post(f"/projects/{project.pk}/import/", {"file": named(truncated_xlsx(), "x.xlsx")})
    assert response.status_code == 400
    assert "cannot be read" in response.content.decode() and draft_files(settings) == []
    response = client.post(f"/projects/{project.pk}/import/", {})
    assert response.status_code == 400


def test_preview_page_with_a_bad_mapping_and_cancel(web, project, samples, people, settings):
    draft, _ = importing.create_draft(project, people["writer"], name="messy.csv", data=messy())
    client = web("writer")
    url = f"/projects/{project.pk}/import/{draft.id}/"
    response = client.post(url, {"map-1": "tissue", "map-2": "tissue", "action": "confirm"})
    assert response.status_code == 400 and "Two file columns map to tissue" in response.content.decode()
    assert not Event.objects.exists()
    assert web("owner").get(url).status_code == 404  # not the owner's draft
    assert client.post(url + "cancel/").status_code == 302
    assert draft_files(settings) == [] and client.get(url).status_code == 404


PAGE_STATUS = {"anonymous": 302, "stranger": 404, "reader": 403, "writer": 200, "owner": 200, "admin": 200}


@pytest.mark.parametrize("role", ROLES)
def test_import_pages_per_role(web, project, samples, people, role):
    client = web(role)
    user = people[role] or people["stranger"]
    draft, _ = importing.create_draft(project, user, name="messy.csv", data=messy())
    other, _ = importing.create_draft(project, user, name="other.csv", data=messy())
    base = f"/projects/{project.pk}/import/"
    for response in (
        client.get(base),
        client.get(f"{base}{draft.id}/"),
        client.post(base, {"file": named(messy(), "m.csv")}),
        client.post(f"{base}{draft.id}/", {"action": "confirm"}),
        client.post(f"{base}{other.id}/cancel/"),
    ):
        expected = PAGE_STATUS[role]
        if expected == 200 and response.request["REQUEST_METHOD"] == "POST":
            expected = 302
        assert response.status_code == expected, (response.request["PATH_INFO"], response.status_code)
        if role == "anonymous":
            assert response["Location"].startswith("/accounts/login/")
    assert Event.objects.exists() is (PAGE_STATUS[role] == 200)


def test_import_forms_need_the_csrf_token(web, project, samples, people):
    client = web("writer", enforce_csrf_checks=True)
    response = client.post(f"/projects/{project.pk}/import/", {"file": named(messy(), "m.csv")})
    assert response.status_code == 403
    draft, _ = importing.create_draft(project, people["writer"], name="messy.csv", data=messy())
    response = client.post(f"/projects/{project.pk}/import/{draft.id}/", {"action": "confirm"})
    assert response.status_code == 403 and not Event.objects.exists()


# --- reading files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "delimiter", "headers"),
    [
        (b"a,b,c\n1,2,3\n", "x.csv", ",", ["a", "b", "c"]),
        (b"a;b;c\n1;2,5;3\n", "x.csv", ";", ["a", "b", "c"]),
        (b"a\tb\n1\t2\n", "x.txt", "\t", ["a", "b"]),
        (b"a,b\n1,2\n", "x.tsv", "\t", ["a,b"]),
        (b'"a, b",c\n"1\n2",3\n', "x.csv", ",", ["a, b", "c"]),
        (b"only\nrow\n", "x.csv", ",", ["only"]),
        ("\ufeffa,b\n1,2\n".encode("utf-16"), "x.csv", ",", ["a", "b"]),
    ],
)
def test_reading_delimiters_and_quotes(data, name, delimiter, headers):
    table = importing.read_table(data, name)
    assert table.delimiter == delimiter and table.headers == headers
    assert len(table.rows) == 1


def test_formula_guard_and_extra_cells():
    table = importing.read_table(b"a,b\n'=SUM(1),'+x\n1,2,3\n", "x.csv")
    assert table.rows[0][1] == ["=SUM(1)", "+x"]
    assert table.rows[1][1] == ["1", "2"] and "more cells than the header" in table.notes[0]
