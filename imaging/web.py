"""Pages: the study list (search and filters), a study's page (series with thumbnails, quality,
ingest reports, linked patient, downloads), adding DICOM, and the ZIP download with DICOMDIR.

The pages read the index directly and use the API and DICOMweb from the browser (thumbnails,
uploads, ingest progress); everything here can be done through `/api/v1/imaging/` and
`/dicomweb/` too.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from django.conf import settings
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render
from django.urls import path
from django.views import View

from imaging.models import IngestRun, Instance, Series, Study
from imaging.services.quality import numbers_of
from metadata.models import Entity, ProjectRole
from metadata.querysets import has_project_role, projects_of
from metadata.services.entities import linkable_entities

PAGE_SIZE = 50


class StudyListView(LoginRequiredMixin, View):
    def get(self, request):
        params = request.GET
        studies = Study.objects.for_user(request.user, "view").select_related("patient", "project")
        filters = {
            k: params.get(k, "").strip()[:100]
            for k in ("project", "patient", "modality", "date_from", "date_to", "q")
        }
        if filters["project"].isdigit():
            studies = studies.filter(project_id=int(filters["project"]))
        if filters["patient"]:
            studies = studies.filter(
                Q(patient__patient_id__iexact=filters["patient"])
                | Q(patient__name__icontains=filters["patient"])
            )
        if filters["modality"]:
            studies = studies.filter(series__modality__iexact=filters["modality"]).distinct()
        for name, lookup in (("date_from", "study_date__gte"), ("date_to", "study_date__lte")):
            value = filters[name].replace("-", "")
            if len(value) == 8 and value.isdigit():
                studies = studies.filter(**{lookup: value})
        if filters["q"]:
            q = filters["q"]
            studies = studies.filter(
                Q(description__icontains=q)
                | Q(accession_number__iexact=q)
                | Q(study_uid=q)
                | Q(patient__name__icontains=q)
            )
        page = Paginator(studies.order_by("-study_date", "-pk"), PAGE_SIZE).get_page(params.get("page"))
        return render(
            request,
            "imaging/study_list.html",
            {
                "page": page,
                "filters": filters,
                "filtered": any(filters.values()),
                "projects": projects_of(request.user),
                "can_add": projects_of(request.user, [ProjectRole.WRITER, ProjectRole.ADMIN]).exists(),
            },
        )


def get_study(user, pk: int) -> Study:
    study = (
        Study.objects.for_user(user, "view")
        .select_related("patient__sample", "project")
        .filter(pk=pk)
        .first()
    )
    if study is None:
        raise Http404("No such study, or you have no access to it.")
    return study


class StudyDetailView(LoginRequiredMixin, View):
    def get(self, request, pk: int):
        study = get_study(request.user, pk)
        series = list(study.series.order_by("number", "pk"))
        stored = dict(Instance.objects.filter(series__study=study).values_list("pk", "ingest_id"))
        instance_ids = set(stored)
        ingests = IngestRun.objects.filter(pk__in={i for i in stored.values() if i}).order_by("-pk")[:20]
        runs = [
            {"run": run, "entries": [e for e in run.report if e.get("instance") in instance_ids]}
            for run in ingests
        ]
        can_write = has_project_role(request.user, study.project, "writer")
        samples = linkable_entities(study.project) if can_write else []
        return render(
            request,
            "imaging/study_detail.html",
            {
                "study": study,
                "series": series,
                "runs": runs,
                "can_write": can_write,
                "samples": samples,
                "base": f"/dicomweb/studies/{study.study_uid}",
                "ohif_url": settings.IMAGING_OHIF_URL.format(study=study.study_uid)
                if settings.IMAGING_OHIF_URL
                else "",
            },
        )

    def post(self, request, pk: int):
        """Link the study's patient to a metadata entity (writers)."""
        study = get_study(request.user, pk)
        if not has_project_role(request.user, study.project, "writer"):
            raise Http404("No such study, or you have no access to it.")
        value = request.POST.get("sample", "")
        sample = (
            Entity.objects.filter(project=study.project, pk=int(value)).first() if value.isdigit() else None
        )
        study.patient.sample = sample
        study.patient.save(update_fields=["sample"])
        return self.get(request, pk)


class AddDicomView(LoginRequiredMixin, View):
    def get(self, request):
        projects = projects_of(request.user, [ProjectRole.WRITER, ProjectRole.ADMIN])
        return render(
            request,
            "imaging/add.html",
            {
                "projects": projects,
                "port": settings.IMAGING_DICOM_PORT,
                "ae_title": settings.IMAGING_AE_TITLE,
            },
        )


def dicomdir_zip(instances: list[Instance], name: str) -> StreamingHttpResponse:
    """The instances as a ZIP with a DICOMDIR (pydicom's FileSet lays it out), streamed."""
    from pydicom.fileset import FileSet

    folder = tempfile.TemporaryDirectory(prefix="dicomdir-")
    files = FileSet()
    for instance in instances:
        files.add(str(instance.full_path))
    files.write(folder.name)

    class Pipe:
        def __init__(self):
            self.parts: list[bytes] = []

        def write(self, data):
            self.parts.append(bytes(data))
            return len(data)

        def flush(self):
            pass

        def take(self) -> bytes:
            data, self.parts = b"".join(self.parts), []
            return data

    def stream():
        pipe = Pipe()
        try:
            with zipfile.ZipFile(pipe, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for path in sorted(Path(folder.name).rglob("*")):
                    if path.is_file():
                        archive.write(path, path.relative_to(folder.name).as_posix())
                        yield pipe.take()
            yield pipe.take()
        finally:
            folder.cleanup()

    response = StreamingHttpResponse(stream(), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{name}.zip"'
    return response


class DownloadView(LoginRequiredMixin, View):
    def get(self, request, pk: int, series: int | None = None):
        study = get_study(request.user, pk)
        instances = Instance.objects.filter(series__study=study).order_by("series__number", "number", "pk")
        name = f"study-{study.study_date or study.pk}"
        if series is not None:
            chosen = Series.objects.filter(study=study, pk=series).first()
            if chosen is None:
                raise Http404("No such series.")
            instances = instances.filter(series=chosen)
            name += f"-series-{chosen.number if chosen.number is not None else chosen.pk}"
        found = [i for i in instances if i.full_path.is_file()]
        if not found:
            raise Http404("Nothing to download.")
        return dicomdir_zip(found, name)


app_name = "imaging"

urlpatterns = [
    path("studies/", StudyListView.as_view(), name="study-list"),
    path("studies/add/", AddDicomView.as_view(), name="add"),
    path("studies/<int:pk>/", StudyDetailView.as_view(), name="study-detail"),
    path("studies/<int:pk>/download/", DownloadView.as_view(), name="study-download"),
    path("studies/<int:pk>/series/<int:series>/download/", DownloadView.as_view(), name="series-download"),
]


def stack_order(instances: list[Instance]) -> list[Instance]:
    """Slices in the order of their position along the image normal (from Image Position and
    Orientation Patient), else by instance number; never by file name."""

    def position(instance: Instance):
        origin = numbers_of(instance.attributes, "00200032", 3)
        orientation = numbers_of(instance.attributes, "00200037", 6)
        if not origin or not orientation:
            return None
        row, column = orientation[:3], orientation[3:]
        normal = (
            row[1] * column[2] - row[2] * column[1],
            row[2] * column[0] - row[0] * column[2],
            row[0] * column[1] - row[1] * column[0],
        )
        return sum(o * n for o, n in zip(origin, normal, strict=True))

    positions = {i.pk: position(i) for i in instances}
    if all(p is not None for p in positions.values()) and len(set(positions.values())) == len(instances):
        return sorted(instances, key=lambda i: (positions[i.pk], i.pk))
    return sorted(instances, key=lambda i: (i.number is None, i.number or 0, i.pk))


WINDOW_PRESETS = [
    ("auto", "Automatic (file or histogram)", ""),
    ("soft", "Soft tissue 40 / 400", "40,400"),
    ("lung", "Lung −600 / 1500", "-600,1500"),
    ("bone", "Bone 300 / 1500", "300,1500"),
    ("brain", "Brain 40 / 80", "40,80"),
    ("liver", "Liver 60 / 160", "60,160"),
]


class ViewerView(LoginRequiredMixin, View):
    """The built-in viewer: a series as a stack (scroll, window/level, zoom, pan, cine for
    multi-frame images), the study's series as thumbnails, and a tag browser."""

    def get(self, request, pk: int):
        study = get_study(request.user, pk)
        series = list(study.series.order_by("number", "pk"))
        if not series:
            raise Http404("This study has no series.")
        chosen = next((s for s in series if s.series_uid == request.GET.get("series")), series[0])
        instances = stack_order(list(chosen.instances.all()))
        config = {
            "base": f"/dicomweb/studies/{study.study_uid}/series/{chosen.series_uid}",
            "tags": f"/studies/{study.pk}/instances/",
            "instances": [
                {
                    "id": i.pk,
                    "sop": i.sop_instance_uid,
                    "number": i.number,
                    "frames": i.frames,
                    "colour": ((i.attributes.get("00280002") or {}).get("Value") or [1])[0] == 3,
                }
                for i in instances
            ],
            "presets": {key: value for key, _, value in WINDOW_PRESETS},
        }
        return render(
            request,
            "imaging/viewer.html",
            {
                "study": study,
                "series": series,
                "chosen": chosen,
                "config": config,
                "presets": WINDOW_PRESETS,
            },
        )


class InstanceTagsView(LoginRequiredMixin, View):
    """Every attribute of an instance as [tag, keyword, VR, value] rows (the tag browser)."""

    def get(self, request, pk: int, instance: int):
        import pydicom
        from django.http import JsonResponse

        study = get_study(request.user, pk)
        found = Instance.objects.filter(series__study=study, pk=instance).first()
        if found is None:
            raise Http404("No such instance.")
        rows = []

        def walk(dataset, depth: int) -> None:
            for element in dataset:
                if element.VR == "SQ":
                    rows.append(
                        [
                            f"{int(element.tag):08X}",
                            "  " * depth + (element.keyword or "(private)"),
                            "SQ",
                            f"{len(element.value)} item(s)",
                        ]
                    )
                    for item in element.value:
                        walk(item, depth + 1)
                    continue
                if element.tag == 0x7FE00010 or element.VR in ("OB", "OW", "OF", "OD", "UN"):
                    value = f"({len(element.value or b''):,} bytes)"
                else:
                    value = str(element.value)[:500]
                rows.append(
                    [
                        f"{int(element.tag):08X}",
                        "  " * depth + (element.keyword or "(private)"),
                        element.VR,
                        value,
                    ]
                )

        walk(pydicom.dcmread(found.full_path), 0)
        return JsonResponse({"instance": found.sop_instance_uid, "rows": rows})


urlpatterns += [
    path("studies/<int:pk>/view/", ViewerView.as_view(), name="viewer"),
    path("studies/<int:pk>/instances/<int:instance>/tags/", InstanceTagsView.as_view(), name="instance-tags"),
]
