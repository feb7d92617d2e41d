"""The one websocket (`/ws/jobs/`) that pushes job progress to browsers and API clients.

Protocol (JSON):
  client → {"action": "subscribe", "job": 12}
           {"action": "subscribe", "object": "pathology.slide", "id": 5}
           {"action": "unsubscribe", ...same keys}
  server → {"type": "job", "job": {...}}                 one update, in order per job
           {"type": "subscribed" | "unsubscribed", ...}  {"type": "error", "detail": "..."}

A socket hears about the user's own jobs without subscribing (staff: about every job). Access is
re-checked for every message delivered, so a revoked right stops the stream at once.
Unauthenticated sockets are closed with code 4401.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.apps import apps

from portal.models import Job
from portal.querysets import RestrictedQuerySet
from portal.services.jobs import object_group

MAX_SUBSCRIPTIONS = 500


def visible_object_group(user, label, object_id) -> str | None:
    """The job group of object `label` ("app.model") `object_id`, if `user` may see that object.

    Only models with a `RestrictedQuerySet` qualify; anything else, or an object that does not
    exist or is hidden, gives None (the two look alike to the client).
    """
    try:
        app_label, model_name = str(label or "").split(".")
        model = apps.get_model(app_label, model_name)
        object_id = int(object_id)
    except (TypeError, ValueError, LookupError):
        return None
    if not isinstance(model._default_manager.all(), RestrictedQuerySet):
        return None
    if model._default_manager.for_user(user, "view").filter(pk=object_id).exists():
        return object_group(model._meta.app_label, model._meta.model_name, object_id)
    return None


class JobProgressConsumer(AsyncJsonWebsocketConsumer):
    """Job progress for one signed-in user."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            # Accept, then close with 4401, so clients learn why (a bare 403 says nothing).
            await self.accept()
            await self.close(code=4401)
            return
        self.user = user
        self.groups_joined: set[str] = set()
        self.last_sequence: dict[int, int] = {}
        # Join before accepting, so a client hears every update sent after its socket opened.
        await self._join(f"jobs.user.{user.pk}")
        if user.is_staff:
            await self._join("jobs.staff")
        await self.accept()

    async def disconnect(self, code) -> None:
        for group in list(getattr(self, "groups_joined", ())):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def _join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.add(group)

    async def receive_json(self, content, **kwargs) -> None:
        if not isinstance(content, dict) or content.get("action") not in ("subscribe", "unsubscribe"):
            await self.send_json({"type": "error", "detail": 'Send {"action": "subscribe", "job": <id>}.'})
            return
        group = await self._group_for(content)
        if group is None:
            await self.send_json({"type": "error", "detail": "Not found, or you may not see it."})
            return
        reply = {k: content[k] for k in ("job", "object", "id") if k in content}
        if content["action"] == "subscribe":
            if len(self.groups_joined) >= MAX_SUBSCRIPTIONS:
                await self.send_json({"type": "error", "detail": "Too many subscriptions."})
                return
            await self._join(group)
            await self.send_json({"type": "subscribed", **reply})
            if "job" in content:
                job = await self._visible_job_payload(int(content["job"]))
                if job:
                    await self._deliver(job)
        else:
            await self.channel_layer.group_discard(group, self.channel_name)
            self.groups_joined.discard(group)
            await self.send_json({"type": "unsubscribed", **reply})

    @database_sync_to_async
    def _group_for(self, content: dict) -> str | None:
        try:
            if "job" in content:
                job_id = int(content["job"])
                if Job.objects.for_user(self.user, "view").filter(pk=job_id).exists():
                    return f"job.{job_id}"
                return None
        except (TypeError, ValueError):
            return None
        return visible_object_group(self.user, content.get("object"), content.get("id"))

    @database_sync_to_async
    def _visible_job_payload(self, job_id: int) -> dict | None:
        from portal.services.jobs import job_payload

        job = (Job.objects.for_user(self.user, "view").select_related("target_type")
               .filter(pk=job_id).first())
        return job_payload(job) if job else None

    @database_sync_to_async
    def _may_see(self, job_id: int) -> bool:
        return Job.objects.for_user(self.user, "view").filter(pk=job_id).exists()

    async def _deliver(self, job: dict) -> None:
        # A socket may be in several groups that hear the same update: send each one once,
        # and never an older state after a newer one.
        if job["sequence"] <= self.last_sequence.get(job["id"], -1):
            return
        self.last_sequence[job["id"]] = job["sequence"]
        await self.send_json({"type": "job", "job": job})

    async def job_update(self, event: dict) -> None:
        job = event["job"]
        if job["sequence"] <= self.last_sequence.get(job["id"], -1):
            return
        self.user = await self._refresh_user()
        if self.user is None or not await self._may_see(job["id"]):
            return
        await self._deliver(job)

    @database_sync_to_async
    def _refresh_user(self):
        from django.contrib.auth import get_user_model

        return get_user_model().objects.filter(pk=self.user.pk, is_active=True).first()
