"""The slide pages: list with filters and metadata facts, adding, the viewer page; access."""

from __future__ import annotations

import pytest

from metadata.models import ProjectProperty, PropertyType
from metadata.services.entities import create_entities
from metadata.services.events import append_events
from metadata.tests.conftest import catalogue_entry
from pathology.models import Slide, SlideState
from pathology.services.facts import slide_facts
from pathology.tests.conftest import run_conversion
from pathology.tests.test_api import add

pytestmark = pytest.mark.django_db


@pytest.fixture
def ready(api, project, slide_files, small_tiles):
    slide = Slide.objects.get(
        pk=add(api, "writer", project, slide_files["generic"], name="Block A").json()["id"]
    )
    run_conversion(slide)
    return slide


def add_column(project, key, kind_key, **fields):
    prop = catalogue_entry(key, **fields)
    ProjectProperty.objects.create(
        project=project, property=prop, entity_kind=project.entity_kinds.get(key=kind_key)
    )


@pytest.fixture
def linked(ready, project, people):
    """The slide linked to a sample whose patient has a diagnosis and which has a stain."""
    add_column(project, "stain", "sample", label="Stain", type=PropertyType.TEXT, options=[])
    add_column(project, "diagnosis", "patient", label="Diagnosis", type=PropertyType.TEXT, options=[])
    (patient,) = create_entities(project.entity_kinds.get(key="patient"), 1, user=people["writer"])
    (sample,) = create_entities(
        project.entity_kinds.get(key="sample"), 1, user=people["writer"], parent=patient
    )
    append_events(
        project,
        [
            {"entity": sample.pk, "property": "stain", "value": "H&E"},
            {"entity": patient.pk, "property": "diagnosis", "value": "adenocarcinoma"},
        ],
        author=people["writer"],
    )
    Slide.objects.filter(pk=ready.pk).update(sample=sample)
    ready.refresh_from_db()
    return ready, sample, patient


def test_stain_and_diagnosis_come_from_the_linked_sample_and_its_patient(linked):
    slide, sample, _ = linked
    assert slide_facts([slide]) == {
        slide.pk: {"sample": sample.mnemonic, "stain": "H&E", "diagnosis": "adenocarcinoma"}
    }


def test_the_list_filters_and_shows_facts(linked, web, project):
    slide, sample, _ = linked
    other = Slide.objects.create(
        project=project,
        name="Block B",
        file_name="b.svs",
        state=SlideState.FAILED,
        message="Not a slide format the portal reads",
    )
    page = web("reader").get("/slides/")
    html = page.content.decode()
    assert page.status_code == 200 and "Block A" in html and "Block B" in html
    assert (
        "adenocarcinoma" in html
        and "H&amp;E" in html
        and f"/api/v1/slides/{slide.pk}/images/thumbnail" in html
    )
    assert "Not a slide format" in html
    for query, shown, hidden in [
        ("?state=failed", "Block B", "Block A"),
        ("?stain=h%26e", "Block A", "Block B"),
        ("?diagnosis=adeno", "Block A", "Block B"),
        (f"?sample={sample.mnemonic}", "Block A", "Block B"),
        ("?q=block+b", "Block B", "Block A"),
        (f"?project={project.pk}&state=ready", "Block A", "Block B"),
    ]:
        html = web("reader").get(f"/slides/{query}").content.decode()
        assert shown in html and hidden not in html, query
    assert other.pk
    assert "Block A" not in web("stranger").get("/slides/").content.decode()
    assert web("anonymous").get("/slides/").status_code == 302


def test_the_viewer_page(linked, web, project):
    slide, sample, _ = linked
    reader = web("reader").get(f"/slides/{slide.pk}/").content.decode()
    assert "openseadragon.min.js" in reader and f"/api/v1/slides/{slide.pk}/deepzoom.dzi" in reader
    assert "0.2500 µm per pixel" in reader and "adenocarcinoma" in reader and sample.mnemonic in reader
    assert 'data-tool="rectangle"' not in reader and "Convert again" not in reader  # readers look only
    writer = web("writer").get(f"/slides/{slide.pk}/").content.decode()
    assert 'data-tool="rectangle"' in writer and "Convert again" in writer and 'id="slide-sample"' in writer
    # the other slides of the same case (the patient) are one click away
    second = Slide.objects.create(project=project, name="Block C", file_name="c.svs", sample=sample)
    html = web("reader").get(f"/slides/{slide.pk}/").content.decode()
    assert f'href="/slides/{second.pk}/" rel="next"' in html
    assert web("stranger").get(f"/slides/{slide.pk}/").status_code == 404
    assert web("anonymous").get(f"/slides/{slide.pk}/").status_code == 302
    assert web("admin").get(f"/slides/{slide.pk}/").status_code == 200


def test_the_add_page(web, project):
    html = web("writer").get("/slides/add/").content.decode()
    assert "Drop slide files here" in html and project.name in html
    assert "writer or admin" in web("reader").get("/slides/add/").content.decode()
    assert web("anonymous").get("/slides/add/").status_code == 302
