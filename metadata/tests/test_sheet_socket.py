"""The live sheet's websocket and page: who may connect, hear and write (real Redis channel layer)."""

from __future__ import annotations

import datetime as dt

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.urls import reverse
from django.utils import timezone

from metadata.models import Event
from metadata.services.entities import create_entities
from metadata.services.events import append_events
from metadata.services.projects import remove_member
from portal.asgi import application
from portal.services.tokens import create_api_token

pytestmark = pytest.mark.django_db(transaction=True)


def socket_for(project, user=None, headers=None) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        application, f"/ws/metadata/projects/{project.pk}/",
        headers=headers if headers is not None else [(b"origin", b"http://testserver")],
    )
    if user is not None:
        communicator.scope["user"] = user
    return communicator


async def opened(communicator) -> dict:
    connected, _ = await communicator.connect()
    assert connected
    return await communicator.receive_json_from(timeout=5)


async def closed_with(communicator) -> int:
    await communicator.connect()
    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close"
    return output["code"]


def run(scenario):
    async_to_sync(scenario)()


def test_anonymous_and_strangers_are_refused(people, project):
    async def scenario():
        assert await closed_with(socket_for(project)) == 4401
        assert await closed_with(socket_for(project, people["stranger"])) == 4403

    run(scenario)


@pytest.mark.parametrize("role", ["reader", "writer", "owner", "admin"])
def test_members_and_admins_hear_every_batch_with_its_author(people, project, samples, role):
    async def scenario():
        socket = socket_for(project, people[role])
        hello = await opened(socket)
        assert hello["type"] == "hello" and hello["project"] == project.pk
        assert hello["role"] == {"owner": "admin"}.get(role, role)
        await sync_to_async(append_events)(
            project, [{"entity": samples[0].mnemonic, "property": "species", "value": "Homo sapiens"}],
            author=people["writer"],
        )
        message = await socket.receive_json_from(timeout=5)
        assert message["type"] == "metadata.batch"
        assert message["author"] == "writer"
        assert message["cells"] == [
            {"entity": samples[0].pk, "property": "species", "value": "Homo sapiens", "invalid": None}
        ]
        await socket.disconnect()

    run(scenario)


def test_a_reader_cannot_write_and_a_writer_can(people, project, samples):
    async def scenario():
        reader, writer = socket_for(project, people["reader"]), socket_for(project, people["writer"])
        await opened(reader)
        await opened(writer)
        change = {"entity": samples[0].pk, "property": "tissue", "value": "lung"}
        await reader.send_json_to({"action": "set", "ref": 1, "changes": [change]})
        refused = await reader.receive_json_from(timeout=5)
        assert refused == {"type": "error", "ref": 1, "detail": "Only project writers can change values."}
        assert await sync_to_async(Event.objects.count)() == 0

        await writer.send_json_to({"action": "set", "ref": "w1", "changes": [
            change, {"entity": samples[1].mnemonic, "property": "species", "value": "homo sapiens"}]})
        replies = [await writer.receive_json_from(timeout=5) for _ in range(2)]
        saved = next(r for r in replies if r["type"] == "saved")
        assert saved["ref"] == "w1" and saved["written"] == 2
        assert saved["invalid"] == [{"entity": samples[1].pk, "property": "species",
                                     "message": "Not one of the options; did you mean 'Homo sapiens'?"}]
        heard = await reader.receive_json_from(timeout=5)
        assert heard["type"] == "metadata.batch" and heard["author"] == "writer" and heard["count"] == 2
        await reader.disconnect()
        await writer.disconnect()

    run(scenario)


def test_bad_messages_get_clear_errors_and_write_nothing(people, project, samples):
    async def scenario():
        socket = socket_for(project, people["writer"])
        await opened(socket)
        for message, detail in [
            ({"action": "dance"}, 'Send {"action": "set" | "watch" | "unwatch", …}.'),
            (["not", "an", "object"], 'Send {"action": "set" | "watch" | "unwatch", …}.'),
            ({"action": "set", "changes": []}, "Send between 1 and 10000 changes in a list."),
            ({"action": "set", "changes": "x"}, "Send between 1 and 10000 changes in a list."),
            ({"action": "set", "changes": [{"entity": 1}], "comment": 5}, "The comment must be text."),
        ]:
            await socket.send_json_to(message)
            reply = await socket.receive_json_from(timeout=5)
            assert reply["type"] == "error" and reply["detail"] == detail
        await socket.send_json_to({"action": "set", "ref": 7, "changes": [
            {"entity": "S-9999", "property": "species", "value": "x"},
            {"entity": samples[0].pk, "property": "nope", "value": "x"},
            {"entity": samples[0].pk, "property": "species", "value": "x", "extra": 1},
        ]})
        reply = await socket.receive_json_from(timeout=5)
        assert reply["type"] == "error" and reply["ref"] == 7
        assert set(reply["errors"]) == {"0", "1", "2"}
        assert "No row 'S-9999'" in reply["errors"]["0"][0]
        await socket.send_json_to({"action": "watch", "object": "metadata.nothing", "id": 1})
        assert (await socket.receive_json_from(timeout=5))["type"] == "error"
        await socket.send_json_to({"action": "watch", "object": "portal.user", "id": 999999})
        assert (await socket.receive_json_from(timeout=5))["detail"] == "Not found, or you may not see it."
        assert await sync_to_async(Event.objects.count)() == 0
        await socket.disconnect()

    run(scenario)


def test_a_read_only_token_cannot_write(people, project, samples):
    expires = timezone.now() + dt.timedelta(days=1)
    _, secret = create_api_token(people["writer"], name="ro", scopes=["read"], expires_at=expires)
    _, writing_secret = create_api_token(
        people["writer"], name="rw", scopes=["read", "write"], expires_at=expires
    )

    async def scenario():
        socket = socket_for(project, headers=[(b"authorization", f"Bearer {secret}".encode())])
        assert (await opened(socket))["role"] == "writer"
        await socket.send_json_to({"action": "set", "changes": [
            {"entity": samples[0].pk, "property": "tissue", "value": "lung"}]})
        reply = await socket.receive_json_from(timeout=5)
        assert reply["detail"] == "This token may only read (it lacks the write scope)."
        await socket.disconnect()
        socket = socket_for(project, headers=[(b"authorization", f"Bearer {writing_secret}".encode())])
        await opened(socket)
        await socket.send_json_to({"action": "set", "ref": 1, "changes": [
            {"entity": samples[0].pk, "property": "tissue", "value": "lung"}]})
        replies = [await socket.receive_json_from(timeout=5) for _ in range(2)]
        assert {r["type"] for r in replies} == {"saved", "metadata.batch"}
        await socket.disconnect()

    run(scenario)


def test_a_removed_member_stops_hearing(people, project, samples):
    async def scenario():
        socket = socket_for(project, people["reader"])
        await opened(socket)
        await sync_to_async(remove_member)(project, people["reader"], actor=people["owner"])
        await sync_to_async(append_events)(
            project, [{"entity": samples[0].pk, "property": "tissue", "value": "secret"}],
            author=people["writer"],
        )
        output = await socket.receive_output(timeout=5)
        assert output == {"type": "websocket.close", "code": 4403}

    run(scenario)


def test_added_rows_are_announced(people, project):
    async def scenario():
        socket = socket_for(project, people["reader"])
        await opened(socket)
        kind = await sync_to_async(project.entity_kinds.get)(key="patient")
        created = await sync_to_async(create_entities)(kind, 2, user=people["writer"])
        message = await socket.receive_json_from(timeout=5)
        assert message["type"] == "metadata.rows" and message["kind"] == "patient"
        assert message["entities"] == [e.pk for e in created] and message["author"] == "writer"
        await socket.disconnect()

    run(scenario)


@pytest.mark.parametrize(
    ("who", "status"),
    [("anonymous", 302), ("stranger", 404), ("reader", 200), ("writer", 200), ("owner", 200), ("admin", 200)],
)
def test_sheet_page_permissions(client, people, project, who, status):
    if people[who]:
        client.force_login(people[who])
    response = client.get(reverse("metadata:sheet", args=[project.pk]))
    assert response.status_code == status
    if status == 200:
        html = response.content.decode()
        assert 'id="sheet-config"' in html and "vendor/tabulator/tabulator_esm.min.js" not in html
        assert ("Add rows" in html) == (who != "reader")
        assert ("ask a project admin for the writer role" in html) == (who == "reader")


def test_sheet_page_of_a_missing_project_is_404(client, people):
    client.force_login(people["admin"])
    assert client.get("/projects/999999/sheet/").status_code == 404


def test_watched_linked_objects_report_their_jobs_to_those_who_may_see_them(people, project):
    from django.contrib.contenttypes.models import ContentType

    from portal.models import Job, StoredFile
    from portal.services.jobs import save_and_publish

    stored = StoredFile.objects.create(path="slide.svs", size=1, sha256="0" * 64)
    job = Job.objects.create(
        kind="portal.scrub", target_type=ContentType.objects.get_for_model(StoredFile), target_id=stored.pk
    )

    def progress(value: float) -> None:
        job.progress = value
        save_and_publish(job, ["progress"])

    async def scenario():
        admin, reader = socket_for(project, people["admin"]), socket_for(project, people["reader"])
        await opened(admin)
        await opened(reader)
        watch = {"action": "watch", "object": "portal.storedfile", "id": stored.pk}
        await reader.send_json_to(watch)  # stored files are for staff only
        assert (await reader.receive_json_from(timeout=5))["type"] == "error"
        await admin.send_json_to(watch)
        assert (await admin.receive_json_from(timeout=5)) == {
            "type": "watched", "object": "portal.storedfile", "id": stored.pk}
        await sync_to_async(progress)(0.5)
        message = await admin.receive_json_from(timeout=5)
        assert message["type"] == "job" and message["job"]["progress"] == 0.5
        assert await reader.receive_nothing(timeout=0.5)
        await admin.send_json_to({**watch, "action": "unwatch"})
        assert (await admin.receive_json_from(timeout=5))["type"] == "unwatched"
        await sync_to_async(progress)(0.9)
        assert await admin.receive_nothing(timeout=0.5)
        await admin.disconnect()
        await reader.disconnect()

    run(scenario)
