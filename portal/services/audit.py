"""Writing audit events."""

from __future__ import annotations

from typing import Any

from django.db import models

from portal.models import AuditEvent


def client_ip(request) -> str | None:
    """The client's address; behind a proxy the last hop it appended (not client-controlled)."""
    if request is None:
        return None
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if forwarded:
        return forwarded.split(",")[-1].strip() or None
    return request.META.get("REMOTE_ADDR") or None


def record_audit_event(
    action: str,
    *,
    actor=None,
    request=None,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    **details: Any,
) -> AuditEvent:
    """Append one event. `actor` defaults to the request's user; `obj` fills the object fields."""
    if actor is None and request is not None:
        user = getattr(request, "user", None)
        actor = user if user is not None and user.is_authenticated else None
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
        object_repr = object_repr or str(obj)[:255]
    return AuditEvent.objects.create(
        actor=actor,
        actor_repr=(actor.get_username() if actor is not None else details.get("username", ""))[:255],
        action=action,
        object_type=object_type,
        object_id=object_id,
        object_repr=object_repr[:255],
        ip_address=client_ip(request),
        details=details,
    )
