"""The metadata API: projects (with members and requests to join), the property catalogue and
templates, and inside a project its kinds, columns, rows, events, matrix, history and batches.

Everything inside a project lives under `/api/v1/projects/<id>/…`; `ProjectScopedMixin` resolves
the project once (404 unless the user is a member), then checks the role the action needs.
"""

from __future__ import annotations

import csv
import io
import json
import uuid

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.http import HttpResponse
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404  # a malformed id is a 404, not a 500
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder as DRFJSONEncoder

from metadata.api import serializers as s
from metadata.models import (
    Entity,
    EntityKind,
    Event,
    JoinRequest,
    JoinRequestState,
    Membership,
    Project,
    ProjectProperty,
    Property,
    Template,
)
from metadata.querysets import CONTENT_ACTION_ROLES, has_project_role
from metadata.services import entities as entity_service
from metadata.services import events as event_service
from metadata.services import projects as project_service
from metadata.services.matrix import batches, cell_history, events_as_matrix, matrix_difference
from metadata.services.values import invalid_cells
from portal.api.base import PortalModelViewSet, PortalReadOnlyViewSet, PortalViewSetMixin
from portal.filtersets import as_utc


def parse_moment(value: str | None, name: str = "at"):
    if value in (None, ""):
        return None
    try:
        moment = parse_datetime(value)
    except ValueError:  # well-formed but impossible, e.g. 30 February
        moment = None
    if moment is None or moment.tzinfo is None:
        raise exceptions.ValidationError(
            {name: ["An ISO 8601 date and time with time zone, e.g. 2026-05-01T12:00:00Z."]}
        )
    try:
        return as_utc(moment)
    except ValueError as exc:
        raise exceptions.ValidationError({name: [str(exc)]}) from None


def service_errors(exc) -> exceptions.ValidationError:
    return exceptions.ValidationError({"non_field_errors": [str(exc)], **getattr(exc, "errors", {})})


class ProjectViewSet(PortalModelViewSet):
    """Projects you are a member of; `directory/` finds every project by name and description."""

    queryset = Project.objects.select_related("owner", "template")
    serializer_class = s.ProjectSerializer
    search_fields = ["name", "description"]
    ordering_fields = ["name", "created_at"]
    action_permissions = {
        "members": "view",
        "join": "view",
        "join_requests": "share",
        "accept": "share",
        "decline": "share",
        "remove_member": "share",
    }

    def get_queryset(self):
        if self.action in ("directory", "join"):
            return Project.objects.findable(self.request.user).select_related("owner")
        return super().get_queryset()

    def get_serializer_context(self):
        context = super().get_serializer_context()
        user = self.request.user
        if user.is_authenticated:
            context["roles"] = dict(Membership.objects.filter(user=user).values_list("project_id", "role"))
        return context

    def perform_create(self, serializer):
        data = serializer.validated_data
        try:
            with transaction.atomic():
                serializer.instance = project_service.create_project(
                    name=data["name"],
                    description=data.get("description", ""),
                    owner=self.request.user,
                    template=data.get("template"),
                    request=self.request,
                )
        except IntegrityError as exc:
            raise exceptions.ValidationError({"name": ["A project with this name exists already."]}) from exc

    def perform_destroy(self, instance):
        try:
            instance.delete()
        except ProtectedError as exc:
            raise exceptions.ValidationError(
                {"non_field_errors": ["This project has recorded values; their history cannot be deleted."]}
            ) from exc

    @action(detail=False, methods=["get"], serializer_class=s.ProjectDirectorySerializer)
    def directory(self, request):
        """Every project's name, description and owner, for finding one to join."""
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @action(detail=True, methods=["get", "post"], serializer_class=s.SetMemberSerializer)
    def members(self, request, pk=None):
        """GET: the members (any member). POST {username, role}: add or change one (project admins)."""
        project = self.get_object()
        if request.method == "GET":
            memberships = project.memberships.select_related("user")
            return Response(s.MembershipSerializer(memberships, many=True).data)
        self._require(project, "admin")
        data = self.get_serializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = (
            get_user_model().objects.filter(username=data.validated_data["username"], is_active=True).first()
        )
        if user is None:
            raise exceptions.ValidationError({"username": ["No active user with this name."]})
        try:
            membership = project_service.set_member(
                project, user, data.validated_data["role"], actor=request.user, request=request
            )
        except project_service.ProjectError as exc:
            raise service_errors(exc) from exc
        return Response(s.MembershipSerializer(membership).data, status=status.HTTP_200_OK)

    @action(detail=True, methods=["delete"], url_path=r"members/(?P<user_id>\d+)")
    def remove_member(self, request, pk=None, user_id=None):
        project = self.get_object()
        user = get_object_or_404(get_user_model(), pk=user_id)
        try:
            project_service.remove_member(project, user, actor=request.user, request=request)
        except project_service.ProjectError as exc:
            raise service_errors(exc) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, methods=["post"], serializer_class=s.JoinSerializer)
    def join(self, request, pk=None):
        """Ask the project's admins to let you in."""
        project = self.get_object()
        data = self.get_serializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            join = project_service.request_to_join(
                project, request.user, message=data.validated_data["message"], request=request
            )
        except project_service.ProjectError as exc:
            raise service_errors(exc) from exc
        return Response(s.JoinRequestSerializer(join).data, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"], serializer_class=s.ApplyTemplateSerializer,
            url_path="apply-template")
    def apply_template(self, request, pk=None):
        """Add the kinds and columns of a template that the project lacks (project admins)."""
        project = self.get_object()
        self._require(project, "admin")
        data = self.get_serializer(data=request.data)
        data.is_valid(raise_exception=True)
        project_service.apply_template_audited(
            project, data.validated_data["template"], actor=request.user, request=request
        )
        return Response(s.ProjectSerializer(project, context=self.get_serializer_context()).data)

    @action(detail=True, methods=["get"], url_path="join-requests")
    def join_requests(self, request, pk=None):
        project = self.get_object()
        pending = project.join_requests.filter(state=JoinRequestState.PENDING).select_related("user")
        return Response(s.JoinRequestSerializer(pending, many=True).data)

    @action(
        detail=True,
        methods=["post"],
        serializer_class=s.DecideSerializer,
        url_path=r"join-requests/(?P<request_id>\d+)/accept",
    )
    def accept(self, request, pk=None, request_id=None):
        """Let the user in, with `role` (default reader)."""
        return self._decide(request, request_id, accept=True)

    @action(
        detail=True,
        methods=["post"],
        serializer_class=s.DecideSerializer,
        url_path=r"join-requests/(?P<request_id>\d+)/decline",
    )
    def decline(self, request, pk=None, request_id=None):
        return self._decide(request, request_id, accept=False)

    def _decide(self, request, request_id, *, accept: bool):
        project = self.get_object()
        join = get_object_or_404(JoinRequest, pk=request_id, project=project)
        data = self.get_serializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            join = project_service.decide_join_request(
                join, accept=accept, actor=request.user, role=data.validated_data["role"], request=request
            )
        except project_service.ProjectError as exc:
            raise service_errors(exc) from exc
        return Response(s.JoinRequestSerializer(join).data)

    def _require(self, project, role: str) -> None:
        if not has_project_role(self.request.user, project, role):
            raise exceptions.PermissionDenied(f"Only project {role}s can do this.")


class CatalogueViewSet(PortalModelViewSet):
    """Read by every signed-in user; changed by portal admins only."""

    def check_permissions(self, request):
        super().check_permissions(request)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not request.user.is_staff:
            raise exceptions.PermissionDenied("Only administrators change the catalogue.")


class PropertyViewSet(CatalogueViewSet):
    queryset = Property.objects.all()
    serializer_class = s.PropertySerializer
    search_fields = ["key", "label", "description"]
    filterset_fields = ["type"]
    lookup_field = "key"

    def perform_destroy(self, instance):
        try:
            instance.delete()
        except ProtectedError as exc:
            raise exceptions.ValidationError(
                {
                    "non_field_errors": [
                        "This property is used by templates, projects or values; it cannot be deleted."
                    ]
                }
            ) from exc


class TemplateViewSet(PortalReadOnlyViewSet):
    queryset = Template.objects.prefetch_related("template_properties__property")
    serializer_class = s.TemplateSerializer
    lookup_field = "key"


# --- inside a project -------------------------------------------------------------------------


class MatrixCSVRenderer(BaseRenderer):
    """The matrix as CSV: id, kind, parent, then one column per property key."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        if not isinstance(data, dict) or "rows" not in data:  # an error: say it plainly
            writer.writerow(["error"])
            writer.writerow([data.get("detail", "") if isinstance(data, dict) else data])
            return buffer.getvalue().encode()
        keys = list(dict.fromkeys(c["key"] for c in data["columns"]))
        writer.writerow(["id", "kind", "parent", *keys])
        for row in data["rows"]:
            values = row["values"]
            writer.writerow(
                [
                    row["mnemonic"],
                    row["kind"],
                    row["parent"] or "",
                    *["" if values.get(k) is None else values[k] for k in keys],
                ]
            )
        return buffer.getvalue().encode()


class ProjectScopedMixin(PortalViewSetMixin):
    """Resolve `project_pk` (404 unless a member), then require the role the action needs."""

    #: Role needed per viewset action (default: the content role of the HTTP method's access action).
    action_roles: dict[str, str] = {}

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.project = get_object_or_404(
            Project.objects.for_user(request.user, "view"), pk=kwargs["project_pk"]
        )
        role = self.action_roles.get(self.action) or CONTENT_ACTION_ROLES[self.access_action()]
        if not has_project_role(request.user, self.project, role):
            raise exceptions.PermissionDenied(f"Only project {role}s can do this.")

    def get_queryset(self):
        return super().get_queryset().filter(project=self.project)

    def get_object(self):
        return get_object_or_404(self.get_queryset(), **{self.lookup_field: self.kwargs[self.lookup_field]})


class EntityKindViewSet(ProjectScopedMixin, viewsets.ReadOnlyModelViewSet):
    queryset = EntityKind.objects.select_related("parent")
    serializer_class = s.EntityKindSerializer
    pagination_class = None


class ColumnViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The project's columns; project admins add catalogue properties, move, require or remove them.

    Removing a column keeps its values in the history; adding it again shows them.
    """

    queryset = ProjectProperty.objects.select_related("entity_kind", "property")
    serializer_class = s.ColumnSerializer
    pagination_class = None
    action_roles = {"create": "admin", "destroy": "admin", "partial_update": "admin"}
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_serializer_class(self):
        return {"create": s.AddColumnSerializer, "partial_update": s.ChangeColumnSerializer}.get(
            self.action, s.ColumnSerializer
        )

    def create(self, request, *args, **kwargs):
        data = s.AddColumnSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        kind = self.project.entity_kinds.filter(key=data.validated_data["entity_kind"]).first()
        if kind is None:
            raise exceptions.ValidationError({"entity_kind": ["No such kind of row in this project."]})
        try:
            column = project_service.add_column(
                self.project, kind, data.validated_data["property"],
                required=data.validated_data["required"], actor=request.user, request=request,
            )
        except project_service.ProjectError as exc:
            raise exceptions.ValidationError({"property": [str(exc)]}) from exc
        return Response(s.ColumnSerializer(column).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.ChangeColumnSerializer, responses={200: s.ColumnSerializer})
    def partial_update(self, request, *args, **kwargs):
        column = self.get_object()
        data = s.ChangeColumnSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if not data.validated_data:
            raise exceptions.ValidationError({"non_field_errors": ["Give position and/or required."]})
        project_service.change_column(column, **data.validated_data, actor=request.user, request=request)
        column.refresh_from_db()
        return Response(s.ColumnSerializer(column).data)

    def perform_destroy(self, instance):
        project_service.remove_column(instance, actor=self.request.user, request=self.request)


class EntityViewSet(
    ProjectScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    queryset = Entity.objects.select_related("kind", "parent")
    serializer_class = s.EntitySerializer
    search_fields = ["mnemonic"]
    filterset_fields = ["kind__key"]
    action_roles = {"history": "reader"}

    def get_serializer_class(self):
        return s.CreateEntitiesSerializer if self.action == "create" else s.EntitySerializer

    def create(self, request, *args, **kwargs):
        data = s.CreateEntitiesSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        kind = (
            self.project.entity_kinds.filter(key=data.validated_data["kind"]).select_related("parent").first()
        )
        if kind is None:
            raise exceptions.ValidationError({"kind": ["No such kind of row in this project."]})
        parent = None
        if data.validated_data["parent"]:
            parent = Entity.objects.filter(
                project=self.project, mnemonic=data.validated_data["parent"]
            ).first()
            if parent is None:
                raise exceptions.ValidationError({"parent": ["No such row in this project."]})
        try:
            created = entity_service.create_entities(
                kind, data.validated_data["count"], user=request.user, parent=parent
            )
        except entity_service.EntityError as exc:
            raise service_errors(exc) from exc
        return Response(s.EntitySerializer(created, many=True).data, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["get"])
    def history(self, request, project_pk=None, pk=None):
        """Every event of one cell: `?property=<key>`."""
        entity = self.get_object()
        key = request.query_params.get("property")
        column = ProjectProperty.objects.filter(
            project=self.project, entity_kind=entity.kind_id, property__key=key
        ).first()
        if column is None:
            raise exceptions.ValidationError(
                {"property": ["Give ?property=<key> of one of this row's columns."]}
            )
        return Response(s.EventSerializer(cell_history(entity, column.property_id), many=True).data)


class EventPagination(CursorPagination):
    ordering = ("timestamp", "id")
    page_size = 500
    page_size_query_param = "page_size"
    max_page_size = 5000


class EventViewSet(
    ProjectScopedMixin, mixins.ListModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """The project's events (filter by `since`, `until`, `entity`, `property`, `author`, `batch`);
    POST appends one batch of changes."""

    queryset = Event.objects.select_related("entity", "property", "author")
    serializer_class = s.EventSerializer
    pagination_class = EventPagination
    filter_backends = []
    action_roles = {"redact": "admin"}

    def get_serializer_class(self):
        if self.action == "create":
            return s.AppendEventsSerializer
        if self.action == "redact":
            return s.RedactSerializer
        return s.EventSerializer

    def get_queryset(self):
        queryset = super().get_queryset()
        params = self.request.query_params
        if params.get("since"):
            queryset = queryset.filter(timestamp__gte=parse_moment(params["since"], "since"))
        if params.get("until"):
            queryset = queryset.filter(timestamp__lte=parse_moment(params["until"], "until"))
        for name, lookup in (
            ("entity", "entity__mnemonic"),
            ("property", "property__key"),
            ("author", "author__username"),
        ):
            if params.get(name):
                queryset = queryset.filter(**{lookup: params[name]})
        if params.get("batch"):
            try:
                queryset = queryset.filter(batch=uuid.UUID(params["batch"]))
            except ValueError as exc:
                raise exceptions.ValidationError({"batch": ["Not a batch id."]}) from exc
        return queryset

    def create(self, request, *args, **kwargs):
        data = s.AppendEventsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            result = event_service.append_events(
                self.project,
                data.validated_data["changes"],
                author=request.user,
                comment=data.validated_data["comment"],
            )
        except event_service.EventError as exc:
            raise exceptions.ValidationError(
                {"non_field_errors": [str(exc)], **{f"changes.{k}": v for k, v in exc.errors.items()}}
            ) from exc
        return Response(
            {
                "batch": result.batch,
                "timestamp": result.timestamp,
                "written": len(result.events),
                "unchanged": result.unchanged,
                "invalid": invalid_cells(result.events),
            },
            status=status.HTTP_201_CREATED,
        )

    @action(detail=True, methods=["post"])
    def redact(self, request, project_pk=None, pk=None):
        """Remove a value entered by mistake (project admins; audited)."""
        event = self.get_object()
        data = s.RedactSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            tombstone = event_service.redact_event(
                event, actor=request.user, reason=data.validated_data["reason"], request=request
            )
        except event_service.EventError as exc:
            raise service_errors(exc) from exc
        return Response(s.EventSerializer(tombstone).data, status=status.HTTP_201_CREATED)


AT = OpenApiParameter("at", OpenApiTypes.DATETIME, description="The sheet as it was at this moment.")
FORMAT = OpenApiParameter("format", str, enum=["json", "csv"], description="csv: a CSV download.")
LIMIT = OpenApiParameter(
    "limit", int, description='Only the first rows (in sheet order); the answer then says the "total".'
)
SINCE = OpenApiParameter("since", OpenApiTypes.DATETIME, required=True)
UNTIL = OpenApiParameter("until", OpenApiTypes.DATETIME)


def matrix_json_response(head: dict, matrix, rows: list, mnemonics: dict) -> HttpResponse:
    """The matrix as JSON in the shape JSONRenderer gives (`head`, then "rows"), with each row's
    cached values text put in as it is: 10,000 rows × 100 columns are not decoded and encoded again."""

    def dump(value) -> str:
        return json.dumps(value, cls=DRFJSONEncoder, ensure_ascii=False, separators=(",", ":"))

    kinds = {pk: dump(kind.key) for pk, kind in matrix.kinds.items()}
    raw = matrix.values.raw
    body = ",".join(
        f'{{"id":{r.id},"mnemonic":{dump(r.mnemonic)},"kind":{kinds[r.kind_id]},'
        f'"parent":{dump(mnemonics.get(r.parent_id))},"values":{raw(r.id)}}}'
        for r in rows
    )
    body = f'{dump(head)[:-1]},"rows":[{body}]}}'
    if "\u2028" in body or "\u2029" in body:  # escaped as JSONRenderer does, for JavaScript
        body = body.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return HttpResponse(body.encode(), content_type="application/json")


@extend_schema_view(
    list=extend_schema(parameters=[AT, FORMAT, LIMIT], responses={200: OpenApiTypes.OBJECT}),
    difference=extend_schema(parameters=[SINCE, UNTIL], responses={200: OpenApiTypes.OBJECT}),
)
class MatrixViewSet(ProjectScopedMixin, viewsets.ViewSet):
    """The sheet derived from the events: `?at=` for a past moment, `?format=csv` for CSV."""

    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, MatrixCSVRenderer]

    def list(self, request, project_pk=None):
        at = parse_moment(request.query_params.get("at"))
        limit = request.query_params.get("limit")  # the first rows, for the sheet while the rest load
        if limit not in (None, "") and (not (limit.isascii() and limit.isdigit()) or int(limit) < 1):
            raise exceptions.ValidationError({"limit": ["A number of rows, at least 1."]})
        limit = min(int(limit), 10**9) if limit else None
        matrix = events_as_matrix(self.project, at=at, limit=limit)
        columns = [
            {
                "key": c.property.key,
                "label": c.property.label,
                "kind": c.entity_kind.key,
                "type": c.property.type,
                "unit": c.property.unit,
                "description": c.property.description,
            }
            for c in matrix.columns
        ]
        mnemonics = {r.id: r.mnemonic for r in matrix.rows}
        head = {"project": self.project.pk, "at": at, "columns": columns}
        rows = matrix.rows
        if limit is not None:
            head["total"] = matrix.total
        if request.accepted_renderer.format == "json":
            return matrix_json_response(head, matrix, rows, mnemonics)
        response = Response(
            {
                **head,
                "rows": [
                    {
                        "id": r.id,
                        "mnemonic": r.mnemonic,
                        "kind": matrix.kinds[r.kind_id].key,
                        "parent": mnemonics.get(r.parent_id),
                        "values": matrix.values.get(r.id, {}),
                    }
                    for r in rows
                ],
            }
        )
        if request.accepted_renderer.format == "csv":
            response["Content-Disposition"] = f'attachment; filename="project-{self.project.pk}.csv"'
        return response

    @action(detail=False, methods=["get"])
    def difference(self, request, project_pk=None):
        """Cells that differ between `?since=` and `?until=` (default: now)."""
        since = parse_moment(request.query_params.get("since"), "since")
        if since is None:
            raise exceptions.ValidationError({"since": ["Give ?since=<date and time>."]})
        return Response(
            matrix_difference(self.project, since, parse_moment(request.query_params.get("until"), "until"))
        )


@extend_schema_view(
    list=extend_schema(responses={200: OpenApiTypes.OBJECT}),
    undo=extend_schema(
        request=None,
        responses={201: OpenApiTypes.OBJECT},
        parameters=[OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
    ),
)
class BatchViewSet(ProjectScopedMixin, viewsets.ViewSet):
    """The project's batches, newest first; POST `<batch>/undo/` writes a batch that undoes one."""

    action_roles = {"undo": "writer"}

    def list(self, request, project_pk=None):
        return Response(batches(self.project))

    @action(detail=True, methods=["post"])
    def undo(self, request, project_pk=None, pk=None):
        if request.data:
            raise exceptions.ValidationError({"non_field_errors": ["This action takes no request body."]})
        try:
            batch = uuid.UUID(pk)
        except ValueError as exc:
            raise exceptions.NotFound("No such batch.") from exc
        try:
            result = event_service.undo_batch(self.project, batch, author=request.user)
        except event_service.EventError as exc:
            raise exceptions.NotFound(str(exc)) from exc
        return Response(
            {
                "batch": result.batch,
                "timestamp": result.timestamp,
                "written": len(result.events),
                "conflicts": result.conflicts,
            },
            status=status.HTTP_201_CREATED,
        )
