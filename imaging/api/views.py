"""The imaging API: ingest runs (start from finished uploads, follow, read the report) and the
index of studies, series and instances. Access follows the project: members see, writers ingest.
"""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from imaging.api import serializers as s
from imaging.models import DeidSettings, IngestRun, Pseudonym, Series, Study
from imaging.services.runs import start_ingest_from_uploads
from metadata.models import Project
from metadata.querysets import has_project_role
from portal.api.base import PortalReadOnlyViewSet, PortalViewSetMixin
from portal.api.serializers import JobSerializer
from portal.services.audit import record_audit_event
from storage.services.errors import StorageError


def _number(params, name: str) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    if not value.isdigit():
        raise exceptions.ValidationError({name: ["A number."]})
    return int(value)


class IngestRunViewSet(
    PortalViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """DICOM ingest runs of your projects; POST starts one from your finished uploads."""

    queryset = IngestRun.objects.all()
    serializer_class = s.IngestRunSerializer

    def get_serializer_class(self):
        return s.IngestRunDetailSerializer if self.action == "retrieve" else s.IngestRunSerializer

    def get_queryset(self):
        found = super().get_queryset()
        project = _number(self.request.query_params, "project") if self.action == "list" else None
        return found.filter(project_id=project) if project else found

    @extend_schema(parameters=[OpenApiParameter("project", int)])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=s.IngestStartSerializer, responses={202: s.IngestRunSerializer})
    def create(self, request, *args, **kwargs):
        body = s.IngestStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        project = body.validated_data["project"]
        if not has_project_role(request.user, project, "writer"):
            raise exceptions.PermissionDenied("Adding DICOM needs the writer role in the project.")
        try:
            run, job = start_ingest_from_uploads(
                project=project,
                user=request.user,
                uploads=body.validated_data["uploads"],
                label=body.validated_data.get("label", ""),
            )
        except StorageError as exc:
            return Response({"detail": exc.message, "code": exc.code}, status=exc.status)
        data = s.IngestRunSerializer(run).data
        data["job"] = JobSerializer(job, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)


class StudyViewSet(PortalReadOnlyViewSet):
    """Studies of your projects, newest first; filters: project, patient (id or name), modality,
    date_from / date_to (YYYYMMDD), q (description, accession number, patient, study UID)."""

    queryset = Study.objects.select_related("patient")
    serializer_class = s.StudySerializer

    def get_serializer_class(self):
        return s.StudyDetailSerializer if self.action == "retrieve" else s.StudySerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("project", int),
            OpenApiParameter("patient", str),
            OpenApiParameter("modality", str),
            OpenApiParameter("date_from", str, description="YYYYMMDD"),
            OpenApiParameter("date_to", str, description="YYYYMMDD"),
            OpenApiParameter("q", str),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        found = super().get_queryset()
        if self.action != "list":
            return found.prefetch_related("series")
        params = self.request.query_params
        project = _number(params, "project")
        if project:
            found = found.filter(project_id=project)
        if params.get("patient"):
            value = params["patient"][:64]
            found = found.filter(Q(patient__patient_id__iexact=value) | Q(patient__name__icontains=value))
        if params.get("modality"):
            found = found.filter(series__modality__iexact=params["modality"][:16]).distinct()
        for name, lookup in (("date_from", "study_date__gte"), ("date_to", "study_date__lte")):
            value = params.get(name)
            if value:
                if not (len(value) == 8 and value.isdigit()):
                    raise exceptions.ValidationError({name: ["A date as YYYYMMDD."]})
                found = found.filter(**{lookup: value})
        if params.get("q"):
            q = params["q"][:200]
            found = found.filter(
                Q(description__icontains=q)
                | Q(accession_number__iexact=q)
                | Q(study_uid=q)
                | Q(patient__name__icontains=q)
                | Q(patient__patient_id__iexact=q)
            )
        return found


class SeriesViewSet(PortalReadOnlyViewSet):
    """A series with its instances (ordered by instance number)."""

    queryset = Series.objects.prefetch_related("instances")
    serializer_class = s.SeriesDetailSerializer


class ProjectDeidView(APIView):
    """A project's de-identification on ingest: GET (members), PUT (project admins)."""

    def project(self, request, pk: int, role: str):
        project = Project.objects.filter(pk=pk).first()
        if project is None or not has_project_role(request.user, project, "reader"):
            raise exceptions.NotFound("No such project.")
        if not has_project_role(request.user, project, role):
            raise exceptions.PermissionDenied(f"This needs the {role} role in the project.")
        return project

    @extend_schema(responses=s.DeidSettingsSerializer)
    def get(self, request, pk):
        project = self.project(request, pk, "reader")
        found = DeidSettings.objects.filter(project=project).first()
        return Response({"enabled": bool(found and found.enabled), "options": found.options if found else []})

    @extend_schema(request=s.DeidSettingsSerializer, responses=s.DeidSettingsSerializer)
    def put(self, request, pk):
        project = self.project(request, pk, "admin")
        body = s.DeidSettingsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        DeidSettings.objects.update_or_create(
            project=project, defaults={**body.validated_data, "updated_by": request.user}
        )
        record_audit_event(
            "imaging.deidentification_changed", actor=request.user, obj=project, **body.validated_data
        )
        return Response(body.validated_data)


class ReidentificationView(APIView):
    """The project's re-identification table (pseudonym → original), for project admins only."""

    @extend_schema(responses=s.PseudonymSerializer(many=True))
    def get(self, request, pk):
        from imaging.services.deid import reveal

        project = ProjectDeidView().project(request, pk, "admin")
        rows = (
            Pseudonym.objects.for_user(request.user, "view")
            .filter(project=project)
            .order_by("kind", "pk")[:10000]
        )
        record_audit_event("imaging.reidentification_read", actor=request.user, obj=project)
        return Response(
            [
                {"kind": p.kind, "pseudonym": p.pseudonym, "original": reveal(p), "created_at": p.created_at}
                for p in rows
            ]
        )
