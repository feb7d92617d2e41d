"""Who may do what with projects and everything inside them.

A project's members have one role each: reader (view), writer (view and change content) or admin
(also change the project itself, its members and properties). Portal admins (staff) may do all.
Everything attached to a project (entities, events, later slides, studies, datasets) is restricted
through `ProjectScopedQuerySet`, so membership is the one access unit.
"""

from __future__ import annotations

from django.db import models

from portal.querysets import RestrictedQuerySet, is_portal_admin

ROLE_ORDER = {"reader": 0, "writer": 1, "admin": 2}

# The least role each action needs, on the project itself and on what is inside it.
PROJECT_ACTION_ROLES = {"view": "reader", "change": "admin", "delete": "admin", "share": "admin"}
CONTENT_ACTION_ROLES = {"view": "reader", "change": "writer", "delete": "writer", "share": "admin"}


def roles_at_least(role: str) -> list[str]:
    return [name for name, rank in ROLE_ORDER.items() if rank >= ROLE_ORDER[role]]


def project_ids_for(user, role: str) -> models.QuerySet:
    """Ids of the projects where `user` has at least `role` (a subquery, not a list)."""
    from metadata.models import Membership

    return Membership.objects.filter(user=user, role__in=roles_at_least(role)).values("project_id")


class ProjectQuerySet(RestrictedQuerySet):
    def restrict(self, user, action: str) -> ProjectQuerySet:
        return self.filter(pk__in=project_ids_for(user, PROJECT_ACTION_ROLES[action]))

    def findable(self, user) -> ProjectQuerySet:
        """Projects whose name and description `user` may find: every project, for signed-in users."""
        if user is None or not user.is_authenticated or not user.is_active:
            return self.none()
        return self.all()


class ProjectScopedQuerySet(RestrictedQuerySet):
    """Rows that belong to a project through `project_field`; access follows membership."""

    project_field = "project"

    def restrict(self, user, action: str) -> ProjectScopedQuerySet:
        return self.filter(
            **{f"{self.project_field}__in": project_ids_for(user, CONTENT_ACTION_ROLES[action])}
        )


def project_role(user, project) -> str | None:
    """`user`'s role in `project` ("admin" for portal admins), or None."""
    if is_portal_admin(user):
        return "admin"
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    from metadata.models import Membership

    return Membership.objects.filter(user=user, project=project).values_list("role", flat=True).first()


def has_project_role(user, project, role: str) -> bool:
    found = project_role(user, project)
    return found is not None and ROLE_ORDER[found] >= ROLE_ORDER[role]


def projects_of(user, roles=None) -> models.QuerySet:
    """The projects `user` is a member of (with one of `roles`, if given), by name; every project
    for portal admins. For choosing a project in the other apps' pages."""
    from metadata.models import Membership, Project

    if is_portal_admin(user):
        return Project.objects.order_by("name")
    memberships = Membership.objects.filter(user=user)
    if roles:
        memberships = memberships.filter(role__in=roles)
    return Project.objects.filter(pk__in=memberships.values("project_id")).order_by("name")
