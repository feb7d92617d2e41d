"""What a metadata cell of type "slide" shows: the slide's name, state and viewer, per user."""

from __future__ import annotations

from pathology.models import Slide
from portal.services.links import LinkTarget


def resolve_slides(user, ids: list[int]) -> dict[int, LinkTarget]:
    """The slides among `ids` that `user` may see (others are reported as not found)."""
    return {
        s.pk: LinkTarget(
            id=s.pk,
            label=s.name,
            url=f"/slides/{s.pk}/",
            state=s.get_state_display(),
            object="pathology.slide",
        )
        for s in Slide.objects.for_user(user, "view").filter(pk__in=ids)
    }
