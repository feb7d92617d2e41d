"""What a metadata cell of type "dataset" shows: the dataset's name, state and page, per user."""

from __future__ import annotations

from portal.services.links import LinkTarget
from storage.models import Dataset


def resolve_datasets(user, ids: list[int]) -> dict[int, LinkTarget]:
    """The datasets among `ids` that `user` may see (others are reported as not found)."""
    found = Dataset.objects.for_user(user, "view").filter(pk__in=ids).exclude(state="purged")
    return {
        d.pk: LinkTarget(
            id=d.pk,
            label=f"{d.name} ({d.mnemonic})",
            url=f"/datasets/{d.mnemonic}/",
            state=d.get_state_display(),
            object="storage.dataset",
        )
        for d in found
    }
