"""Creating projects, managing members and requests to join; every change is audited."""

from __future__ import annotations

from django.db import models, transaction
from django.utils import timezone

from metadata.models import (
    EntityKind,
    JoinRequest,
    JoinRequestState,
    Membership,
    Project,
    ProjectProperty,
    ProjectRole,
    Template,
)
from portal.services.audit import record_audit_event

DEFAULT_KINDS = [{"key": "sample", "label": "Sample", "prefix": "S"}]


class ProjectError(Exception):
    """A request about a project that cannot be done; the message is for the user."""


@transaction.atomic
def create_project(
    *, name: str, owner, description: str = "", template: Template | None = None, request=None
) -> Project:
    """A new project owned (and administered) by `owner`, with the template's kinds and columns."""
    project = Project.objects.create(name=name, description=description, owner=owner, template=template)
    Membership.objects.create(project=project, user=owner, role=ProjectRole.ADMIN)
    apply_template(project, template, user=owner)
    record_audit_event(
        "project.created",
        actor=owner,
        request=request,
        obj=project,
        template=template.key if template else None,
    )
    return project


def apply_template(project: Project, template: Template | None, *, user=None) -> None:
    """Add the template's entity kinds and columns the project does not have yet."""
    kinds_spec = template.entity_kinds if template and template.entity_kinds else DEFAULT_KINDS
    kinds = {k.key: k for k in project.entity_kinds.all()}
    prefixes = {k.prefix for k in kinds.values()}
    for position, spec in enumerate(kinds_spec):
        if spec["key"] not in kinds:
            prefix = spec.get("prefix", spec["key"][:1].upper())
            if prefix in prefixes:  # taken by a kind the project has: use a longer one
                prefix = next(p for n in range(2, 11) if (p := spec["key"][:n].upper()) not in prefixes)
            prefixes.add(prefix)
            kinds[spec["key"]] = EntityKind.objects.create(
                project=project,
                key=spec["key"],
                label=spec.get("label", spec["key"].title()),
                prefix=prefix,
                position=position,
            )
    for spec in kinds_spec:
        parent = spec.get("parent")
        if parent and parent in kinds and kinds[spec["key"]].parent_id is None:
            kinds[spec["key"]].parent = kinds[parent]
            kinds[spec["key"]].save(update_fields=["parent"])
    if template is None:
        return
    existing = set(project.project_properties.values_list("entity_kind__key", "property_id"))
    for link in template.template_properties.select_related("property"):
        kind = kinds.get(link.entity_kind)
        if kind is None or (kind.key, link.property_id) in existing:
            continue
        ProjectProperty.objects.create(
            project=project,
            property=link.property,
            entity_kind=kind,
            position=link.position,
            required=link.required,
            added_by=user,
        )


@transaction.atomic
def apply_template_audited(project: Project, template: Template, *, actor, request=None) -> None:
    """A project admin adds what `template` has and the project lacks (kinds, columns)."""
    apply_template(project, template, user=actor)
    record_audit_event("project.template_applied", actor=actor, request=request, obj=project,
                       template=template.key)


# --- columns ----------------------------------------------------------------------------------


@transaction.atomic
def add_column(project: Project, kind: EntityKind, prop, *, required: bool = False, actor,
               request=None) -> ProjectProperty:
    """Add catalogue property `prop` as the last column of `kind` rows."""
    if ProjectProperty.objects.filter(project=project, entity_kind=kind, property=prop).exists():
        raise ProjectError(f"{kind.label} rows have this column already.")
    last = ProjectProperty.objects.filter(project=project, entity_kind=kind).aggregate(
        last=models.Max("position"))["last"]
    column = ProjectProperty.objects.create(
        project=project, entity_kind=kind, property=prop, position=0 if last is None else last + 1,
        required=required, added_by=actor,
    )
    record_audit_event("project.column_added", actor=actor, request=request, obj=project,
                       property=prop.key, entity_kind=kind.key)
    return column


@transaction.atomic
def remove_column(column: ProjectProperty, *, actor, request=None) -> None:
    """Remove a column from the sheet; its values stay in the history (add it again to see them)."""
    column.delete()
    record_audit_event("project.column_removed", actor=actor, request=request, obj=column.project,
                       property=column.property.key, entity_kind=column.entity_kind.key)


@transaction.atomic
def change_column(column: ProjectProperty, *, position: int | None = None, required: bool | None = None,
                  actor, request=None) -> ProjectProperty:
    """Move a column to `position` (0 = first of its kind) and/or make it required or optional."""
    changed = {}
    if position is not None:
        siblings = list(
            ProjectProperty.objects.select_for_update()
            .filter(project_id=column.project_id, entity_kind_id=column.entity_kind_id)
            .exclude(pk=column.pk)
            .order_by("position", "id")
        )
        position = max(0, min(position, len(siblings)))
        siblings.insert(position, column)
        for index, sibling in enumerate(siblings):
            if sibling.position != index or sibling.pk == column.pk:
                sibling.position = index
                sibling.save(update_fields=["position"])
        changed["position"] = position
    if required is not None and required != column.required:
        column.required = required
        column.save(update_fields=["required"])
        changed["required"] = required
    if changed:
        record_audit_event("project.column_changed", actor=actor, request=request, obj=column.project,
                           property=column.property.key, entity_kind=column.entity_kind.key, **changed)
    return column


def set_member(project: Project, user, role: str, *, actor, request=None) -> Membership:
    """Add `user` to `project` with `role`, or change their role."""
    if role not in ProjectRole.values:
        raise ProjectError(f"Unknown role {role!r}; use reader, writer or admin.")
    with transaction.atomic():
        membership, created = Membership.objects.select_for_update().get_or_create(
            project=project, user=user, defaults={"role": role}
        )
        previous = None if created else membership.role
        if not created and previous != role:
            if previous == ProjectRole.ADMIN and role != ProjectRole.ADMIN:
                _keep_an_admin(project, leaving=user)
            membership.role = role
            membership.save(update_fields=["role"])
        JoinRequest.objects.filter(project=project, user=user, state=JoinRequestState.PENDING).update(
            state=JoinRequestState.ACCEPTED, decided_by=actor, decided_at=timezone.now()
        )
        record_audit_event(
            "project.member_set",
            actor=actor,
            request=request,
            obj=project,
            member=user.username,
            role=role,
            previous_role=previous,
        )
    return membership


def remove_member(project: Project, user, *, actor, request=None) -> None:
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(project=project, user=user).first()
        if membership is None:
            raise ProjectError(f"{user.username} is not a member of this project.")
        if membership.role == ProjectRole.ADMIN:
            _keep_an_admin(project, leaving=user)
        membership.delete()
        record_audit_event(
            "project.member_removed",
            actor=actor,
            request=request,
            obj=project,
            member=user.username,
            previous_role=membership.role,
        )


def _keep_an_admin(project: Project, *, leaving) -> None:
    others = Membership.objects.filter(project=project, role=ProjectRole.ADMIN).exclude(user=leaving)
    if not others.exists():
        raise ProjectError("A project needs at least one admin; make someone else admin first.")


def request_to_join(project: Project, user, *, message: str = "", request=None) -> JoinRequest:
    if Membership.objects.filter(project=project, user=user).exists():
        raise ProjectError("You are already a member of this project.")
    if JoinRequest.objects.filter(project=project, user=user, state=JoinRequestState.PENDING).exists():
        raise ProjectError("Your request to join is already waiting for an admin.")
    join = JoinRequest.objects.create(project=project, user=user, message=message)
    record_audit_event("project.join_requested", actor=user, request=request, obj=project)
    return join


def decide_join_request(
    join: JoinRequest, *, accept: bool, actor, role: str = ProjectRole.READER, request=None
) -> JoinRequest:
    with transaction.atomic():
        join = JoinRequest.objects.select_for_update().get(pk=join.pk)
        if join.state != JoinRequestState.PENDING:
            raise ProjectError(f"This request was already {join.state}.")
        if accept:
            join.role = role
            set_member(join.project, join.user, role, actor=actor, request=request)
        join.state = JoinRequestState.ACCEPTED if accept else JoinRequestState.DECLINED
        join.decided_by, join.decided_at = actor, timezone.now()
        join.save(update_fields=["state", "role", "decided_by", "decided_at"])
        if not accept:
            record_audit_event(
                "project.join_declined",
                actor=actor,
                request=request,
                obj=join.project,
                member=join.user.username,
            )
    return join
