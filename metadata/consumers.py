"""The live sheet: `/ws/metadata/projects/<id>/`, one socket per open sheet (browser or script).

Protocol (JSON):
  server → {"type": "hello", "project": 3, "role": "writer", "user": "alice"}
           {"type": "metadata.batch", "batch": "…", "author": "bob", "timestamp": "…",
            "cells": [{"entity": 12, "property": "species", "value": "Homo sapiens",
                       "invalid": null}, …]}                 another edit (or "reload": true)
           {"type": "metadata.rows", "kind": "sample", "entities": [41, 42], "author": "bob"}
                                                            rows were added
           {"type": "saved", "ref": …, "batch": "…", "written": 2, "unchanged": 0, "invalid": […]}
           {"type": "job", "job": {…}}                       a job on a watched linked object
           {"type": "error", "ref": …, "detail": "…", "errors": {…}}
  client → {"action": "set", "ref": "any", "changes": [{"entity": 12 | "S-0012",
            "property": "species", "value": …}], "comment": ""}      writers only
           {"action": "watch" | "unwatch", "object": "pathology.slide", "id": 5}

Unauthenticated sockets are closed with 4401, sockets of non-members with 4403 (a stranger learns
only names and descriptions, through the project directory). Every delivered message and every
write re-checks the role, so a removed member stops hearing at once, and a reader (or a token
without the `write` scope) cannot write.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from metadata.models import Project
from metadata.querysets import ROLE_ORDER, project_role
from metadata.services import events as event_service
from metadata.services.values import invalid_cells
from portal.consumers import visible_object_group
from portal.services.jobs import object_group

MAX_WATCHED = 2000
MAX_CHANGES = 10_000


class SheetConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        await self.accept()
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=4401)
            return
        self.user = user
        self.project_id = int(self.scope["url_route"]["kwargs"]["project_pk"])
        role = await self._role()
        if role is None:
            await self.close(code=4403)
            return
        self.watched: dict[str, tuple] = {}
        self.group = event_service.project_group(self.project_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_json(
            {"type": "hello", "project": self.project_id, "role": role, "user": user.get_username()}
        )

    async def disconnect(self, code) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        for group in list(getattr(self, "watched", {})):
            await self.channel_layer.group_discard(group, self.channel_name)

    @database_sync_to_async
    def _role(self) -> str | None:
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(pk=self.user.pk, is_active=True).first()
        project = Project.objects.filter(pk=self.project_id).first()
        if user is None or project is None:
            return None
        self.user = user
        return project_role(user, project)

    async def receive_json(self, content, **kwargs) -> None:
        action = content.get("action") if isinstance(content, dict) else None
        ref = content.get("ref") if isinstance(content, dict) else None
        if action == "set":
            await self.send_json(await self._set(content))
        elif action in ("watch", "unwatch"):
            await self._watch(content, action)
        else:
            await self.send_json(
                {"type": "error", "ref": ref, "detail": 'Send {"action": "set" | "watch" | "unwatch", …}.'}
            )

    async def _set(self, content: dict) -> dict:
        ref = content.get("ref")
        scopes = self.scope.get("token_scopes")
        if scopes is not None and "write" not in scopes:
            return {"type": "error", "ref": ref,
                    "detail": "This token may only read (it lacks the write scope)."}
        changes, comment = content.get("changes"), content.get("comment", "")
        if not isinstance(changes, list) or not changes or len(changes) > MAX_CHANGES:
            return {"type": "error", "ref": ref,
                    "detail": f"Send between 1 and {MAX_CHANGES} changes in a list."}
        if not isinstance(comment, str):
            return {"type": "error", "ref": ref, "detail": "The comment must be text."}
        return await self._append(changes, comment, ref)

    @database_sync_to_async
    def _append(self, changes: list, comment: str, ref) -> dict:
        project = Project.objects.filter(pk=self.project_id).first()
        role = project_role(self.user, project) if project else None
        if role is None or ROLE_ORDER[role] < ROLE_ORDER["writer"]:
            return {"type": "error", "ref": ref, "detail": "Only project writers can change values."}
        try:
            result = event_service.append_events(project, changes, author=self.user, comment=comment)
        except event_service.EventError as exc:
            return {"type": "error", "ref": ref, "detail": str(exc), "errors": exc.errors}
        return {
            "type": "saved",
            "ref": ref,
            "batch": str(result.batch) if result.batch else None,
            "timestamp": result.timestamp.isoformat() if result.timestamp else None,
            "written": len(result.events),
            "unchanged": result.unchanged,
            "invalid": invalid_cells(result.events),
        }

    async def _watch(self, content: dict, action: str) -> None:
        group = await self._object_group(content)
        reply = {"object": content.get("object"), "id": content.get("id")}
        if group is None:
            await self.send_json({"type": "error", **reply, "detail": "Not found, or you may not see it."})
            return
        if action == "watch":
            if len(self.watched) >= MAX_WATCHED:
                await self.send_json({"type": "error", **reply, "detail": "Too many watched objects."})
                return
            await self.channel_layer.group_add(group, self.channel_name)
            self.watched[group] = group
        else:
            await self.channel_layer.group_discard(group, self.channel_name)
            self.watched.pop(group, None)
        await self.send_json({"type": f"{action}ed", **reply})

    @database_sync_to_async
    def _object_group(self, content: dict) -> str | None:
        return visible_object_group(self.user, content.get("object"), content.get("id"))

    # --- messages from the channel layer ---------------------------------------------------

    async def metadata_batch(self, event: dict) -> None:
        if await self._role() is None:  # removed from the project, or deactivated: stop here
            await self.close(code=4403)
            return
        await self.send_json(event)

    async def metadata_rows(self, event: dict) -> None:
        await self.metadata_batch(event)

    async def job_update(self, event: dict) -> None:
        job = event["job"]
        target = job.get("target") or {}
        try:
            app_label, model = str(target.get("type", "")).split(".")
        except ValueError:
            return
        group = object_group(app_label, model, target.get("id"))
        if group not in self.watched:
            return
        if await self._object_group({"object": target.get("type"), "id": target.get("id")}) != group:
            return  # the user may no longer see the object
        await self.send_json({"type": "job", "job": job})
