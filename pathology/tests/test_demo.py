"""`manage.py load_demo_data` also gives the demo a pathology project with two linked slides."""

from __future__ import annotations

import io

from django.core.management import call_command

from pathology.demo import DEMO_PROJECT
from pathology.models import Slide, SlideState
from pathology.services.facts import slide_facts
from pathology.tests.conftest import run_conversion


def test_demo_slides_are_loaded_once_linked_and_convert(db, settings, tmp_path):
    settings.DEBUG = True
    settings.PORTAL_DATA_DIR = tmp_path
    call_command("ship_templates", verbosity=0)
    out = io.StringIO()
    call_command("load_demo_data", stdout=out)
    assert f"created demo project {DEMO_PROJECT!r} with 2 slides" in out.getvalue()
    slides = list(Slide.objects.filter(project__name=DEMO_PROJECT).order_by("name"))
    assert [s.name for s in slides] == ["Case 1, H&E", "Case 2, H&E"]
    for slide in slides:
        run_conversion(slide)
        assert slide.state == SlideState.READY and slide.pyramid.mpp_x == 0.5
    facts = slide_facts(slides)
    assert [facts[s.pk]["diagnosis"] for s in slides] == ["lung adenocarcinoma", "squamous cell carcinoma"]
    assert {facts[s.pk]["stain"] for s in slides} == {"H&E"}
    call_command("load_demo_data", stdout=io.StringIO())
    assert Slide.objects.filter(project__name=DEMO_PROJECT).count() == 2


def test_a_changed_template_skips_the_demo_slides_whole(db, settings, tmp_path):
    from metadata.models import Project, TemplateProperty

    settings.DEBUG = True
    settings.PORTAL_DATA_DIR = tmp_path
    call_command("ship_templates", verbosity=0)
    # an admin took a column the demo fills in out of the shipped template
    TemplateProperty.objects.filter(template__key="pathology", property__key="stain").delete()
    out = io.StringIO()
    call_command("load_demo_data", stdout=out)
    assert "demo slides skipped: the template 'pathology' was changed here" in out.getvalue()
    assert not Project.objects.filter(name=DEMO_PROJECT).exists()  # nothing half-made
    assert not Slide.objects.exists()
