"""Creating entities with mnemonic ids (S-0001, P-0001 …)."""

from __future__ import annotations

from django.db import transaction

from metadata.models import Entity, EntityKind


class EntityError(Exception):
    """An entity request that cannot be done; the message is for the user."""


def format_mnemonic(prefix: str, number: int) -> str:
    return f"{prefix}-{number:04d}"


@transaction.atomic
def create_entities(
    kind: EntityKind, count: int = 1, *, user=None, parent: Entity | None = None
) -> list[Entity]:
    """`count` new entities of `kind`, numbered on from the kind's last number."""
    if not 1 <= count <= 100_000:
        raise EntityError("Create between 1 and 100,000 rows at a time.")
    if parent is not None:
        if parent.project_id != kind.project_id:
            raise EntityError("The parent belongs to another project.")
        if kind.parent_id is not None and parent.kind_id != kind.parent_id:
            raise EntityError(f"A {kind.label.lower()} belongs to a {kind.parent.label.lower()}.")
    kind = EntityKind.objects.select_for_update().get(pk=kind.pk)
    first = kind.next_number
    kind.next_number = first + count
    kind.save(update_fields=["next_number"])
    created = Entity.objects.bulk_create(
        [
            Entity(
                project_id=kind.project_id,
                kind=kind,
                parent=parent,
                created_by=user,
                mnemonic=format_mnemonic(kind.prefix, number),
            )
            for number in range(first, first + count)
        ]
    )
    transaction.on_commit(lambda: _announce(kind, created, user))
    return created


def _announce(kind: EntityKind, created: list[Entity], user) -> None:
    """Tell open sheets of the project that rows were added (they fetch them)."""
    from metadata.services.events import project_group
    from portal.services.realtime import publish

    publish(
        [project_group(kind.project_id)],
        {
            "type": "metadata.rows",
            "project": kind.project_id,
            "kind": kind.key,
            "entities": [e.pk for e in created[:1000]],
            "count": len(created),
            "author": getattr(user, "username", None),
        },
    )


def linkable_entities(project, limit: int = 2000) -> list[Entity]:
    """A project's rows to choose from when linking a slide or study to one, in sheet order."""
    found = Entity.objects.filter(project=project).select_related("kind")
    return list(found.order_by("kind__position", "mnemonic")[:limit])
