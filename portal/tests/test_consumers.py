"""The job websocket's permission rules, in process (Channels' communicator, real Redis layer)."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.contenttypes.models import ContentType

from portal.asgi import application
from portal.models import Job, StoredFile, User
from portal.services.jobs import save_and_publish

pytestmark = pytest.mark.django_db(transaction=True)


def connect_as(user: User) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, "/ws/jobs/",
                                         headers=[(b"origin", b"http://testserver")])
    communicator.scope["user"] = user
    return communicator


async def joined(communicator) -> None:
    connected, _ = await communicator.connect()
    assert connected


def publish(job: Job, message: str) -> None:
    job.message = message
    save_and_publish(job, ["message"])


async def owner_with_job_and_socket(username: str) -> tuple[User, Job, WebsocketCommunicator]:
    owner = await sync_to_async(User.objects.create_user)(username)
    job = await sync_to_async(Job.objects.create)(kind="portal.scrub", created_by=owner)
    socket = connect_as(owner)
    await joined(socket)
    return owner, job, socket


def test_permission_is_rechecked_for_every_message():
    async def scenario():
        owner, job, socket = await owner_with_job_and_socket("owner")
        await sync_to_async(publish)(job, "first")
        assert (await socket.receive_json_from(timeout=5))["job"]["message"] == "first"
        owner.is_active = False
        await sync_to_async(owner.save)()
        await sync_to_async(publish)(job, "second")
        assert await socket.receive_nothing(timeout=1)
        await socket.disconnect()

    async_to_sync(scenario)()


def test_object_subscriptions_follow_view_rights_on_the_object():
    async def scenario():
        admin = await sync_to_async(User.objects.create_user)("boss", is_staff=True)
        stranger = await sync_to_async(User.objects.create_user)("stranger")
        stored = await sync_to_async(StoredFile.objects.create)(path="a.bin", size=1, sha256="0" * 64)
        content_type = await sync_to_async(ContentType.objects.get_for_model)(StoredFile)
        job = await sync_to_async(Job.objects.create)(
            kind="portal.scrub", target_type=content_type, target_id=stored.pk)
        outsider = connect_as(stranger)
        await joined(outsider)
        await outsider.send_json_to({"action": "subscribe", "object": "portal.storedfile", "id": stored.pk})
        assert (await outsider.receive_json_from(timeout=5))["type"] == "error"
        await outsider.send_json_to({"action": "subscribe", "object": "no.such", "id": "x"})
        assert (await outsider.receive_json_from(timeout=5))["type"] == "error"
        await outsider.send_json_to(["not", "an", "object"])
        assert (await outsider.receive_json_from(timeout=5))["type"] == "error"

        watcher = connect_as(admin)
        await joined(watcher)
        await sync_to_async(publish)(job, "staff see every job")
        assert (await watcher.receive_json_from(timeout=5))["job"]["message"] == "staff see every job"
        await watcher.send_json_to({"action": "subscribe", "object": "portal.storedfile", "id": stored.pk})
        assert (await watcher.receive_json_from(timeout=5)) == {
            "type": "subscribed", "object": "portal.storedfile", "id": stored.pk}
        await sync_to_async(publish)(job, "update")
        # In two groups (staff, object) but delivered once.
        assert (await watcher.receive_json_from(timeout=5))["job"]["message"] == "update"
        assert await watcher.receive_nothing(timeout=0.5)
        assert await outsider.receive_nothing(timeout=0.5)
        await outsider.disconnect()
        await watcher.disconnect()

    async_to_sync(scenario)()


def test_an_idle_socket_still_hears_updates():
    """Sockets outlive several of the channel layer's blocking reads (5 s each) without updates."""
    async def scenario():
        _, job, socket = await owner_with_job_and_socket("idle")
        assert await socket.receive_nothing(timeout=11, interval=0.5)
        await sync_to_async(publish)(job, "after a quiet while")
        assert (await socket.receive_json_from(timeout=5))["job"]["message"] == "after a quiet while"
        await socket.disconnect()

    async_to_sync(scenario)()
