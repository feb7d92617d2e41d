"""What the metadata says about slides: stain and diagnosis of the sample a slide is linked to.

A slide links to one metadata entity (a slide row, a block, a patient); its values are looked up
on that entity and then on its parents, nearest first, so a stain recorded on the slide row and a
diagnosis recorded on the patient both reach the slide.
"""

from __future__ import annotations

from collections import defaultdict

from metadata.models import Entity, Property
from metadata.services.matrix import cached_current_values

FACT_KEYS = ("stain", "diagnosis")
MAX_DEPTH = 6


def slide_facts(
    slides, keys: tuple[str, ...] = FACT_KEYS, with_patient: bool = False
) -> dict[int, dict[str, object]]:
    """{slide id: {"stain": …, "diagnosis": …, "sample": mnemonic}} for slides linked to a sample
    (the values of `keys`); `with_patient` adds "patient": the id of the sample's topmost
    ancestor (the patient the AI splits by)."""
    linked = [s for s in slides if s.sample_id]
    if not linked:
        return {}
    parents: dict[int, int | None] = {}
    projects: dict[int, int] = {}
    mnemonics: dict[int, str] = {}
    wanted = {s.sample_id for s in linked}
    for _ in range(MAX_DEPTH):
        wanted -= set(parents)
        if not wanted:
            break
        for entity_id, parent_id, project_id, mnemonic in Entity.objects.filter(pk__in=wanted).values_list(
            "id", "parent_id", "project_id", "mnemonic"
        ):
            parents[entity_id], projects[entity_id], mnemonics[entity_id] = parent_id, project_id, mnemonic
        wanted = {p for p in parents.values() if p is not None}
    properties = dict(Property.objects.filter(key__in=keys).values_list("id", "key"))
    cells_by_project: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for entity_id, project_id in projects.items():
        for property_id in properties:
            cells_by_project[project_id].add((entity_id, property_id))
    values: dict[tuple[int, int], object] = {}
    for project_id, cells in cells_by_project.items():
        values.update(cached_current_values(project_id, cells))
    facts = {}
    for slide in linked:
        found: dict[str, object] = {"sample": mnemonics.get(slide.sample_id, "")}
        entity, depth = slide.sample_id, 0
        root = entity
        while entity is not None and depth < MAX_DEPTH:
            for property_id, key in properties.items():
                if key not in found and (entity, property_id) in values:
                    found[key] = values[(entity, property_id)]
            root, entity, depth = entity, parents.get(entity), depth + 1
        if with_patient:
            found["patient"] = root
        facts[slide.pk] = found
    return facts
