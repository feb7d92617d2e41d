"""Demo metadata for `./dev run`: a sequencing project with a short history to browse and edit.

Loaded by `manage.py load_demo_data` (through `portal.signals.demo_data_requested`); idempotent.
"""

from __future__ import annotations

from django.db import transaction

from metadata.models import Project, Template
from metadata.services.entities import create_entities
from metadata.services.events import EventError, append_events
from metadata.services.projects import create_project, set_member

DEMO_PROJECT = "Demo: lung adenocarcinoma cohort"

PATIENTS = [("female", 63, "lung adenocarcinoma"), ("male", 71, "lung adenocarcinoma"),
            ("female", 58, "squamous cell carcinoma"), ("male", 66, "lung adenocarcinoma")]


def load_demo_metadata(owner, member, *, log=print) -> None:
    if Project.objects.filter(name=DEMO_PROJECT).exists():
        return
    template = Template.objects.filter(key="sequencing").first()
    if template is None:
        log("demo metadata skipped: the shipped templates are missing (run manage.py ship_templates)")
        return
    make_or_skip(_make_demo_project, owner, member, template, what="demo metadata", log=log)


def make_or_skip(make, owner, member, template: Template, *, what: str, log) -> bool:
    """`make(owner, member, template, log)` in one transaction (a half-made project would stop
    later runs); False, with a message instead of a traceback that stops `./dev run`, where an
    admin changed the shipped template so that it lacks a column or kind of rows the demo fills in."""
    try:
        with transaction.atomic():
            make(owner, member, template, log)
    except (EventError, KeyError) as exc:
        details = f"{exc}; {exc.errors}" if isinstance(exc, EventError) else f"no kind of rows {exc}"
        log(f"{what} skipped: the template {template.key!r} was changed here and lacks what the demo "
            f"fills in ({details})")
        return False
    return True


def _make_demo_project(owner, member, template, log) -> None:
    project = create_project(
        name=DEMO_PROJECT,
        description="Tumour and matched normal samples of four patients, sequenced by WGS and RNA-Seq. "
        "Demo data: edit freely.",
        owner=owner,
        template=template,
    )
    set_member(project, member, "writer", actor=owner)
    kinds = {k.key: k for k in project.entity_kinds.all()}
    individuals = create_entities(kinds["individual"], len(PATIENTS), user=owner)
    samples, libraries = [], []
    for individual in individuals:
        pair = create_entities(kinds["sample"], 2, user=owner, parent=individual)
        samples += pair
        for sample in pair:
            libraries += create_entities(kinds["library"], 1, user=owner, parent=sample)
    first = []
    for individual, (sex, age, diagnosis) in zip(individuals, PATIENTS, strict=True):
        first += [
            {"entity": individual.pk, "property": "sex", "value": sex},
            {"entity": individual.pk, "property": "age_at_sampling", "value": age},
            {"entity": individual.pk, "property": "phenotype", "value": diagnosis},
        ]
    for number, sample in enumerate(samples):
        values = {
            "species": "homo sapiens" if number == 5 else "Homo sapiens",  # one to correct
            "tissue": "lung",
            "biospecimen_type": "tumour" if number % 2 == 0 else "blood",
            "collection_date": f"2026-0{1 + number // 2}-1{number}",
        }
        first += [{"entity": sample.pk, "property": k, "value": v} for k, v in values.items()]
    append_events(project, first, author=owner, comment="Sample sheet from the clinic")
    libraries_batch = []
    for number, library in enumerate(libraries):
        values = {
            "library_strategy": "WGS" if number % 2 == 0 else "RNA-Seq",
            "library_source": "GENOMIC" if number % 2 == 0 else "TRANSCRIPTOMIC",
            "library_layout": "PAIRED",
            "instrument_platform": "ILLUMINA",
            "instrument_model": "Illumina NovaSeq 6000",
            "read_length": 150,
        }
        libraries_batch += [{"entity": library.pk, "property": k, "value": v} for k, v in values.items()]
    append_events(project, libraries_batch, author=member, comment="Libraries from the sequencing core")
    append_events(
        project,
        [{"entity": individuals[2].pk, "property": "age_at_sampling", "value": 59},
         {"entity": samples[1].pk, "property": "biospecimen_type", "value": "normal"}],
        author=owner,
        comment="Corrections after the tumour board",
    )
    log(f"created demo project {DEMO_PROJECT!r} with {len(individuals) + len(samples) + len(libraries)} rows")
