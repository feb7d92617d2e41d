"""Audit trail for sign-in and permission changes, wired in `PortalConfig.ready()`."""

from __future__ import annotations

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed, post_save, pre_save
from django.dispatch import Signal, receiver

from portal.services.audit import record_audit_event

User = get_user_model()

# Sent by `manage.py load_demo_data` once the demo users exist, so that each app adds its own demo
# data without the core knowing the apps: kwargs `admin`, `researcher` (users) and `log`.
demo_data_requested = Signal()
PRIVILEGE_FIELDS = ("is_staff", "is_superuser", "is_active")
_ADMIN_ACTIONS = {ADDITION: "add", CHANGE: "change", DELETION: "delete"}


@receiver(user_logged_in)
def audit_login(sender, request, user, **kwargs) -> None:
    backend = getattr(user, "backend", "") or ""
    method = "oidc" if "oidc" in backend.lower() else "password"
    record_audit_event("auth.login", actor=user, request=request, method=method)


@receiver(user_logged_out)
def audit_logout(sender, request, user, **kwargs) -> None:
    if user is not None:
        record_audit_event("auth.logout", actor=user, request=request)


@receiver(user_login_failed)
def audit_login_failed(sender, credentials, request=None, **kwargs) -> None:
    record_audit_event("auth.login_failed", request=request,
                       username=str(credentials.get("username", ""))[:150], method="password")


@receiver(pre_save, sender=User)
def remember_privileges(sender, instance, **kwargs) -> None:
    if instance.pk is None:
        instance._old_privileges = None
        return
    instance._old_privileges = (
        User.objects.filter(pk=instance.pk).values(*PRIVILEGE_FIELDS).first()
    )


@receiver(post_save, sender=User)
def audit_privilege_change(sender, instance, created, **kwargs) -> None:
    old = getattr(instance, "_old_privileges", None)
    if created or not old:
        return
    changes = {
        field: [old[field], getattr(instance, field)]
        for field in PRIVILEGE_FIELDS
        if old[field] != getattr(instance, field)
    }
    if changes:
        record_audit_event("permission.changed", obj=instance, changes=changes)


def _audit_m2m(relation: str):
    def handler(sender, instance, action, pk_set, **kwargs) -> None:
        if action not in ("post_add", "post_remove", "post_clear"):
            return
        record_audit_event(
            "permission.changed", obj=instance,
            changes={relation: {"action": action.removeprefix("post_"),
                                "ids": sorted(pk_set or [])}},
        )
    return handler


audit_groups = _audit_m2m("groups")
audit_user_permissions = _audit_m2m("user_permissions")
m2m_changed.connect(audit_groups, sender=User.groups.through, weak=False)
m2m_changed.connect(audit_user_permissions, sender=User.user_permissions.through, weak=False)


@receiver(post_save, sender=LogEntry)
def audit_admin_action(sender, instance: LogEntry, created, **kwargs) -> None:
    if not created:
        return
    ct = instance.content_type
    record_audit_event(
        f"admin.{_ADMIN_ACTIONS.get(instance.action_flag, 'action')}",
        actor=instance.user,
        object_type=f"{ct.app_label}.{ct.model}" if ct else "",
        object_id=str(instance.object_id or ""),
        object_repr=instance.object_repr,
        change=instance.get_change_message(),
    )
