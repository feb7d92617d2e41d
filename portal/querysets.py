"""The access-control base: every user-facing queryset is filtered per user and action.

Models opt in by using `RestrictedQuerySet` (or a subclass) as their manager and overriding
`restrict()`. Views never filter by hand: the base API viewset and page views call `for_user()`
with the action that `action_for_method()` derives from the HTTP method, so none can forget it.
"""

from __future__ import annotations

from django.db import models

ACTIONS = ("view", "change", "delete", "share")

_METHOD_ACTIONS = {
    "GET": "view",
    "HEAD": "view",
    "OPTIONS": "view",
    "POST": "change",
    "PUT": "change",
    "PATCH": "change",
    "DELETE": "delete",
}


def action_for_method(method: str) -> str:
    """The one place that maps an HTTP method to an access action."""
    return _METHOD_ACTIONS.get(method.upper(), "change")


def is_portal_admin(user) -> bool:
    """Staff and superusers administer everything (the 'admin' role of the permission tests)."""
    return bool(user and user.is_authenticated and user.is_active and (user.is_staff or user.is_superuser))


class RestrictedQuerySet(models.QuerySet):
    """A queryset that knows which rows a user may see or act on."""

    def for_user(self, user, action: str = "view") -> RestrictedQuerySet:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of {ACTIONS}")
        if user is None or not user.is_authenticated or not user.is_active:
            return self.none()
        if is_portal_admin(user):
            return self.all()
        return self.restrict(user, action)

    def restrict(self, user, action: str) -> RestrictedQuerySet:
        """Rows a non-admin `user` may act on with `action`; deny by default."""
        return self.none()


def restricted_models() -> list[type[models.Model]]:
    """All installed models whose default manager is restricted (targets of jobs, audit links)."""
    from django.apps import apps

    return [
        model
        for model in apps.get_models()
        if isinstance(model._default_manager.all(), RestrictedQuerySet)
    ]
