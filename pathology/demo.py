"""Demo slides for `./dev run`: a histopathology project with two patients, their blocks and
slides in the metadata, and two synthetic slides linked to them (converted by the worker).

Loaded by `manage.py load_demo_data` (through `portal.signals.demo_data_requested`); idempotent.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from metadata.demo import make_or_skip
from metadata.models import Project, Template
from metadata.services.entities import create_entities
from metadata.services.events import append_events
from metadata.services.projects import create_project, set_member
from pathology.services.slides import add_slide
from pathology.synthetic import Blob, write_large_slide

DEMO_PROJECT = "Demo: lung pathology"
CASES = [
    ("lung adenocarcinoma", [Blob(2600, 2200, 1900, 1500, 0), Blob(6200, 4300, 900, 700, 0)]),
    ("squamous cell carcinoma", [Blob(3000, 2400, 1600, 1700, 1), Blob(6000, 2000, 1200, 900, 0)]),
]


def load_demo_slides(owner, member, *, log=print) -> None:
    if Project.objects.filter(name=DEMO_PROJECT).exists():
        return
    template = Template.objects.filter(key="pathology").first()
    if template is None:
        log("demo slides skipped: the shipped templates are missing (run manage.py ship_templates)")
        return
    make_or_skip(_make_demo_project, owner, member, template, what="demo slides", log=log)


def _make_demo_project(owner, member, template, log) -> None:
    project = create_project(
        name=DEMO_PROJECT,
        description="Two patients with one H&E slide each: synthetic slides to try the viewer, "
        "annotations and the slide list. Demo data: edit freely.",
        owner=owner,
        template=template,
    )
    set_member(project, member, "writer", actor=owner)
    kinds = {k.key: k for k in project.entity_kinds.all()}
    patients = create_entities(kinds["patient"], len(CASES), user=owner)
    rows = []
    for patient in patients:
        (block,) = create_entities(kinds["block"], 1, user=owner, parent=patient)
        (slide_row,) = create_entities(kinds["slide"], 1, user=owner, parent=block)
        rows.append((patient, block, slide_row))
    changes = []
    for (diagnosis, _), (patient, block, slide_row) in zip(CASES, rows, strict=True):
        changes += [
            {"entity": patient.pk, "property": "diagnosis", "value": diagnosis},
            {"entity": block.pk, "property": "block_id", "value": f"H-2026-{block.pk:05d}/A1"},
            {"entity": slide_row.pk, "property": "stain", "value": "H&E"},
        ]
    append_events(project, changes, author=owner, comment="Cases from the tumour board")
    with tempfile.TemporaryDirectory() as folder:
        for number, ((_, blobs), (_, _, slide_row)) in enumerate(zip(CASES, rows, strict=True), 1):
            path = write_large_slide(Path(folder) / f"case-{number}.tif", 8000, 6000, blobs, mpp=0.5)
            slide = add_slide(
                project=project, user=owner, source=path, file_name=path.name, name=f"Case {number}, H&E"
            )
            slide.sample = slide_row
            slide.save(update_fields=["sample"])
            append_events(
                project,
                [{"entity": slide_row.pk, "property": "slide", "value": slide.pk}],
                author=member,
                comment="Slide scanned",
            )
    log(f"created demo project {DEMO_PROJECT!r} with {len(CASES)} slides (converted by the worker)")
