"""Core API endpoints: jobs, job kinds, personal tokens, audit log, current user, link targets."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, generics, mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from portal.api.base import PortalListCreateRetrieveDestroyViewSet, PortalReadOnlyViewSet
from portal.api.errors import Conflict
from portal.api.serializers import (
    ApiTokenCreatedSerializer,
    ApiTokenSerializer,
    AuditEventSerializer,
    JobKindSerializer,
    JobSerializer,
    JobStartSerializer,
    UserSerializer,
)
from portal.filtersets import ApiTokenFilterSet, AuditEventFilterSet, JobFilterSet
from portal.models import ApiToken, AuditEvent, Job
from portal.services import jobs as job_service
from portal.services import tokens as token_service


class JobViewSet(PortalReadOnlyViewSet, mixins.CreateModelMixin):
    """Background jobs you started or that work on objects you can see."""

    queryset = Job.objects.select_related("created_by", "target_type")
    serializer_class = JobSerializer
    filterset_class = JobFilterSet
    ordering_fields = ["created_at", "state", "kind"]
    search_fields = ["kind", "message", "error"]
    action_permissions = {"cancel": "change", "retry": "change"}

    def get_serializer_class(self):
        return JobStartSerializer if self.action == "create" else JobSerializer

    @extend_schema(request=JobStartSerializer, responses={202: JobSerializer})
    def create(self, request, *args, **kwargs):
        serializer = JobStartSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        job = job_service.start_job(
            serializer.validated_data["kind"], user=request.user,
            params=serializer.validated_data["params"],
        )
        data = JobSerializer(job, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["url"]})

    @extend_schema(request=None, responses={202: JobSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Ask the job to stop; a queued job stops at once, a running one within a second."""
        self.ensure_no_body()
        try:
            job = job_service.request_cancel(self.get_object())
        except job_service.JobStateError as exc:
            raise Conflict(str(exc)) from exc
        return Response(JobSerializer(job, context=self.get_serializer_context()).data,
                        status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: JobSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Start a failed or cancelled job again, as a new job linked to this one."""
        self.ensure_no_body()
        job = self.get_object()
        kind = job_service.JOB_KINDS.get(job.kind)
        if kind is None or (kind.staff_only and not request.user.is_staff):
            raise exceptions.PermissionDenied("You may not start this kind of job.")
        try:
            new = job_service.retry_job(job, request.user)
        except job_service.JobStateError as exc:
            raise Conflict(str(exc)) from exc
        data = JobSerializer(new, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["url"]})


class JobKindListView(generics.GenericAPIView):
    """Kinds of job you may start through `POST /api/v1/jobs/`."""

    serializer_class = JobKindSerializer
    pagination_class = None
    filter_backends: list = []

    def get(self, request):
        return Response(JobKindSerializer(job_service.startable_kinds(request.user), many=True).data)


class ApiTokenViewSet(PortalListCreateRetrieveDestroyViewSet):
    """Your personal API tokens. The secret is returned once, when the token is created."""

    queryset = ApiToken.objects.all()
    serializer_class = ApiTokenSerializer
    filterset_class = ApiTokenFilterSet
    ordering_fields = ["created_at", "name"]

    @extend_schema(responses={201: ApiTokenCreatedSerializer})
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        expires = serializer.validated_data.get("expires_at") or (
            timezone.now() + dt.timedelta(days=min(90, settings.PORTAL_TOKEN_MAX_DAYS))
        )
        try:
            token, secret = token_service.create_api_token(
                request.user, name=serializer.validated_data["name"],
                scopes=serializer.validated_data["scope_list"], expires_at=expires,
                request=request, granting_scopes=token_service.token_scopes(request.auth),
            )
        except token_service.TokenError as exc:
            raise exceptions.ValidationError({"non_field_errors": [str(exc)]}) from exc
        token.token = secret
        return Response(ApiTokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        """Revoke the token: it stops working at once; the record stays."""
        try:
            token_service.revoke_api_token(self.get_object(), actor=request.user, request=request)
        except token_service.TokenError as exc:
            raise Conflict(str(exc)) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditEventViewSet(PortalReadOnlyViewSet):
    """The audit log (administrators only)."""

    queryset = AuditEvent.objects.select_related("actor")
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilterSet
    staff_only = True
    ordering_fields = ["timestamp"]
    search_fields = ["action", "actor_repr", "object_repr"]


class MeView(generics.RetrieveUpdateAPIView):
    """The signed-in user."""

    serializer_class = UserSerializer
    http_method_names = ["get", "patch", "head", "options"]

    def get_object(self):
        return self.request.user


class ApiRootView(APIView):
    """Research Data Portal API, version 1. Authenticate with a session or `Authorization: Bearer <token>`."""

    @extend_schema(exclude=True)
    def get(self, request, format=None):
        return Response({
            "me": reverse("api:me", request=request, format=format),
            "jobs": reverse("api:job-list", request=request, format=format),
            "job-kinds": reverse("api:job-kinds", request=request, format=format),
            "tokens": reverse("api:token-list", request=request, format=format),
            "audit-events": reverse("api:auditevent-list", request=request, format=format),
            "schema": reverse("api-schema", request=request, format=format),
            "docs": reverse("api-docs", request=request, format=format),
        })


class LinkListView(APIView):
    """What ids of a link type (dataset, slide, study) name for you: label, URL, state.

    `GET /api/v1/links/<type>/?ids=1,2,3`. An id you may not see is reported as not found, like
    one that does not exist.
    """

    MAX_IDS = 1000

    @extend_schema(
        parameters=[OpenApiParameter("ids", str, required=True, description="Comma-separated ids.")],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request, kind: str):
        from portal.services.links import resolve_links

        if kind not in LINK_KINDS:
            raise exceptions.NotFound(f"No link type {kind!r}; use one of {', '.join(LINK_KINDS)}.")
        raw = [part.strip() for part in request.query_params.get("ids", "").split(",") if part.strip()]
        if not raw or not all(part.isascii() and part.isdigit() and len(part) < 19 for part in raw):
            raise exceptions.ValidationError({"ids": ["Give ?ids= as comma-separated whole numbers."]})
        if len(raw) > self.MAX_IDS:
            raise exceptions.ValidationError({"ids": [f"At most {self.MAX_IDS} ids per request."]})
        found = resolve_links(request.user, kind, [int(part) for part in raw])
        return Response({"type": kind, "results": [found[i] for i in sorted(found)]})


LINK_KINDS = ("dataset", "slide", "study")
