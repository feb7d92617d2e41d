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
        instance_ids = set(Instance.objects.filter(series__study=study).values_list("pk", flat=True))
        ingests = IngestRun.objects.filter(
            pk__in=Instance.objects.filter(series__study=study).values("ingest_id")
        ).order_by("-pk")[:20]
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
