"""Links from metadata cells to objects of other apps (datasets, slides, DICOM studies).

A metadata property of a link type holds the id of an object that lives in another app. That app
registers a resolver here for its link type (in its AppConfig.ready); the sheet and the API ask
`resolve_links` what each id names *for this user*: a label, a URL, the object's state and the
websocket group its jobs report to. An id the user may not see is reported exactly like one that
does not exist, so a link never discloses what is behind it.

    register_link_type("slide", resolve_slides, model="pathology.slide")

    def resolve_slides(user, ids):  # -> {id: LinkTarget}, only the ids `user` may see
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass


@dataclass
class LinkTarget:
    id: int
    label: str
    url: str
    state: str = ""  # e.g. "ready", "converting", "failed"; free text, shown as a badge
    object: str = ""  # "app_label.model", for live job updates on the target's group

    def as_dict(self) -> dict:
        return {**asdict(self), "found": True}


Resolver = Callable[[object, list[int]], dict[int, LinkTarget]]
_resolvers: dict[str, Resolver] = {}


def register_link_type(kind: str, resolver: Resolver) -> None:
    """Let `resolver` answer for link properties of type `kind` (dataset, slide, study)."""
    _resolvers[kind] = resolver


def unregister_link_type(kind: str) -> None:
    _resolvers.pop(kind, None)


def registered_link_types() -> list[str]:
    return sorted(_resolvers)


def resolve_links(user, kind: str, ids: Iterable[int]) -> dict[int, dict]:
    """What each id of type `kind` names for `user`: a dict per id, `found` False when unknown.

    Until the app that owns `kind` is installed, every id is reported as not found.
    """
    wanted = sorted({int(i) for i in ids})
    resolver = _resolvers.get(kind)
    found = resolver(user, wanted) if resolver and wanted else {}
    return {
        i: found[i].as_dict() if i in found else {"id": i, "found": False} for i in wanted
    }
