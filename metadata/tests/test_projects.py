"""Projects: who sees and changes what, members, requests to join, templates applied."""

from __future__ import annotations

import pytest

from metadata.models import Entity, JoinRequestState, Membership, Project
from metadata.querysets import has_project_role
from metadata.services.entities import EntityError, create_entities
from metadata.services.projects import (
    ProjectError,
    decide_join_request,
    remove_member,
    request_to_join,
    set_member,
)
from portal.models import AuditEvent

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "stranger", "reader", "writer", "owner", "admin"]


@pytest.mark.parametrize(
    ("role", "view", "change", "share"),
    [
        ("anonymous", False, False, False),
        ("stranger", False, False, False),
        ("reader", True, False, False),
        ("writer", True, False, False),
        ("owner", True, True, True),
        ("admin", True, True, True),
    ],
)
def test_project_access_by_role(project, people, role, view, change, share):
    user = people[role]
    assert Project.objects.for_user(user, "view").filter(pk=project.pk).exists() is view
    assert Project.objects.for_user(user, "change").filter(pk=project.pk).exists() is change
    assert Project.objects.for_user(user, "share").filter(pk=project.pk).exists() is share
    assert Project.objects.findable(user).filter(pk=project.pk).exists() is (role != "anonymous")


@pytest.mark.parametrize(
    ("role", "view", "change"),
    [
        ("anonymous", False, False),
        ("stranger", False, False),
        ("reader", True, False),
        ("writer", True, True),
        ("owner", True, True),
        ("admin", True, True),
    ],
)
def test_content_access_follows_membership(project, samples, people, role, view, change):
    user = people[role]
    assert Entity.objects.for_user(user, "view").filter(pk=samples[0].pk).exists() is view
    assert Entity.objects.for_user(user, "change").filter(pk=samples[0].pk).exists() is change


def test_template_gives_kinds_columns_and_parent(project):
    kinds = {k.key: k for k in project.entity_kinds.all()}
    assert kinds["sample"].parent == kinds["patient"]
    columns = [
        (c.entity_kind.key, c.property.key)
        for c in project.project_properties.select_related("entity_kind", "property")
    ]
    assert columns == [("patient", "sex"), ("patient", "age"), ("sample", "species"), ("sample", "tissue")]


def test_mnemonics_count_on_per_kind(project, people):
    patients = create_entities(project.entity_kinds.get(key="patient"), 2)
    samples = create_entities(project.entity_kinds.get(key="sample"), 2, parent=patients[1])
    more = create_entities(project.entity_kinds.get(key="sample"), 1)
    assert [e.mnemonic for e in patients + samples + more] == [
        "P-0001",
        "P-0002",
        "S-0001",
        "S-0002",
        "S-0003",
    ]
    with pytest.raises(EntityError, match="belongs to a patient"):
        create_entities(project.entity_kinds.get(key="sample"), 1, parent=samples[0])
    with pytest.raises(EntityError):
        create_entities(project.entity_kinds.get(key="sample"), 0)


def test_members_and_the_last_admin(project, people):
    owner, reader = people["owner"], people["reader"]
    set_member(project, reader, "writer", actor=owner)
    assert has_project_role(reader, project, "writer") and not has_project_role(reader, project, "admin")
    with pytest.raises(ProjectError, match="at least one admin"):
        set_member(project, owner, "reader", actor=owner)
    with pytest.raises(ProjectError, match="at least one admin"):
        remove_member(project, owner, actor=owner)
    remove_member(project, reader, actor=owner)
    assert not Membership.objects.filter(project=project, user=reader).exists()
    actions = list(AuditEvent.objects.filter(object_id=str(project.pk)).values_list("action", flat=True))
    assert actions.count("project.member_set") == 3 and "project.member_removed" in actions
    with pytest.raises(ProjectError):
        set_member(project, reader, "owner", actor=owner)


def test_join_requests(project, people):
    stranger, owner = people["stranger"], people["owner"]
    join = request_to_join(project, stranger, message="I work on the cohort")
    with pytest.raises(ProjectError, match="already waiting"):
        request_to_join(project, stranger)
    with pytest.raises(ProjectError, match="already a member"):
        request_to_join(project, people["reader"])
    decided = decide_join_request(join, accept=True, role="writer", actor=owner)
    assert decided.state == JoinRequestState.ACCEPTED and decided.decided_by == owner
    assert has_project_role(stranger, project, "writer")
    with pytest.raises(ProjectError, match="already accepted"):
        decide_join_request(join, accept=False, actor=owner)
    other = request_to_join(project, people["admin"])
    assert decide_join_request(other, accept=False, actor=owner).state == JoinRequestState.DECLINED
    assert AuditEvent.objects.filter(action="project.join_declined").exists()
