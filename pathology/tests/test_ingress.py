"""The ingress folder: a file is taken once it stopped growing, into the project its folder names."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from django.core.management import call_command
from django.utils import timezone

from pathology.models import IngressSighting, Slide
from pathology.services.ingress import scan_ingress

pytestmark = pytest.mark.django_db


@pytest.fixture
def ingress(settings, tmp_path):
    settings.PORTAL_INGRESS_DIR = tmp_path / "ingress"
    settings.PATHOLOGY_INGRESS_SETTLE_SECONDS = 30
    return tmp_path / "ingress"


def test_a_file_is_taken_once_it_stopped_growing(ingress, project, slide_files, people):
    folder = ingress / str(project.pk)
    folder.mkdir(parents=True)
    target = folder / "scan-1.svs"
    data = slide_files["aperio"].read_bytes()
    target.write_bytes(data[:1000])  # still being copied
    (folder / ".scan-2.svs").write_bytes(data)  # hidden: a copy tool's temporary name
    (folder / "scan-3.svs.part").write_bytes(data)
    start = timezone.now()
    assert scan_ingress(start) == []
    assert scan_ingress(start + dt.timedelta(seconds=20)) == []  # the same for 20 s only
    target.write_bytes(data)  # the copy goes on: the size changes, the clock starts again
    assert scan_ingress(start + dt.timedelta(seconds=25)) == []
    assert scan_ingress(start + dt.timedelta(seconds=50)) == []  # the same for 25 s only
    (added,) = scan_ingress(start + dt.timedelta(seconds=60))
    slide = Slide.objects.get(pk=added)
    assert slide.project == project and slide.ingress == "folder" and slide.created_by == people["owner"]
    assert slide.file_name == "scan-1.svs" and slide.source_full_path.read_bytes() == data
    assert not target.exists() and (folder / ".scan-2.svs").exists() and (folder / "scan-3.svs.part").exists()
    assert not IngressSighting.objects.filter(path=str(target)).exists()
    from portal.models import Job

    assert Job.objects.filter(kind="pathology.convert", target_id=slide.pk).exists()


def test_a_folder_of_no_project_is_reported_and_left_alone(ingress, slide_files):
    folder = ingress / "999999"
    folder.mkdir(parents=True)
    shutil.copy(slide_files["aperio"], folder / "lost.svs")
    start = timezone.now()
    scan_ingress(start)
    assert scan_ingress(start + dt.timedelta(seconds=60)) == []
    assert "no project 999999" in IngressSighting.objects.get().problem
    assert (folder / "lost.svs").exists() and not Slide.objects.exists()
    (folder / "lost.svs").unlink()
    scan_ingress(start + dt.timedelta(seconds=70))
    assert not IngressSighting.objects.exists()  # gone from the folder: forgotten


def test_the_command_runs_one_scan(ingress, project, capsys):
    (ingress / str(project.pk)).mkdir(parents=True)
    call_command("scan_ingress")
    assert "0 slide(s) added" in capsys.readouterr().out
