"""Import and export endpoints of a project (`/api/v1/projects/<id>/…`).

- `imports/` POST a file (multipart, field `file`; CSV, TSV or XLSX): keeps it as a draft and
  answers with the preview; nothing is written. `imports/<draft>/` GET shows the preview again,
  DELETE discards the draft; `imports/<draft>/preview/` POST shows it with other options (column
  mapping, default kind of row, accepted suggestions, clearing by empty cells);
  `imports/<draft>/confirm/` POST with the same options writes one batch. Writers only; a draft
  is visible to its uploader only.
- `export/?format=csv|xlsx|json&at=` downloads the sheet (now, or as it was at `at`);
  `events/export/` downloads every event as JSON. Readers and up.
"""

from __future__ import annotations

from contextlib import contextmanager

from django.http import FileResponse, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from metadata.api.views import ProjectScopedMixin, parse_moment, service_errors
from metadata.services import exporting
from metadata.services import importing as imports
from portal.api.base import StrictSerializer
from portal.api.errors import Gone, PayloadTooLarge
from portal.services.audit import record_audit_event


class InvalidFile(exceptions.APIException):
    """A file that cannot be read as a table; the detail says why."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The file cannot be read as a table."
    default_code = "invalid_file"


class ImportUploadSerializer(StrictSerializer):
    file = serializers.FileField(help_text="A CSV, TSV or XLSX file with a header row.")
    default_kind = serializers.CharField(
        max_length=63,
        required=False,
        allow_blank=True,
        help_text="Kind of row (key) for new rows when the file has no kind column.",
    )


class ImportOptionsSerializer(StrictSerializer):
    mapping = serializers.DictField(
        child=serializers.CharField(max_length=63, allow_blank=True),
        required=False,
        help_text='Changes to the automatic mapping: {"<column index or header>": "<property key>", '
        '"@id", "@kind", "@parent", or "" to ignore the column}.',
    )
    default_kind = serializers.CharField(max_length=63, required=False, allow_blank=True, allow_null=True)
    clear_empty = serializers.BooleanField(
        default=False, help_text="Empty cells clear stored values (otherwise they leave them unchanged)."
    )
    suggestions = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        default=list,
        max_length=10_000,
        help_text="Ids of the normalisation suggestions to apply.",
    )
    all_suggestions = serializers.BooleanField(default=False, help_text="Apply every suggestion.")


def import_options(data) -> imports.Options:
    checked = ImportOptionsSerializer(data=data)
    checked.is_valid(raise_exception=True)
    values = checked.validated_data
    return imports.Options(
        mapping=values.get("mapping") or None,
        default_kind=values.get("default_kind") or None,
        clear_empty=values["clear_empty"],
        suggestions=frozenset(values["suggestions"]),
        all_suggestions=values["all_suggestions"],
    )


@contextmanager
def import_errors():
    """The import service's errors as API errors (4xx, the portal's error format)."""
    try:
        yield
    except imports.DraftExpiredError as exc:
        raise Gone(str(exc))
    except imports.DraftNotFoundError as exc:
        raise exceptions.NotFound(str(exc))
    except imports.ImportFileError as exc:
        raise InvalidFile(str(exc))
    except imports.ImportRequestError as exc:
        raise service_errors(exc)


DRAFT = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The draft's id.")
PREVIEW = OpenApiResponse(OpenApiTypes.OBJECT, description="The preview (nothing has been written).")


@extend_schema_view(
    create=extend_schema(
        request={"multipart/form-data": ImportUploadSerializer},
        responses={201: PREVIEW},
        summary="Upload a file to import; answers with its preview",
    ),
    retrieve=extend_schema(parameters=[DRAFT], responses={200: PREVIEW}),
    preview=extend_schema(
        parameters=[DRAFT], request={"application/json": ImportOptionsSerializer}, responses={200: PREVIEW}
    ),
    confirm=extend_schema(
        parameters=[DRAFT],
        request={"application/json": ImportOptionsSerializer},
        responses={201: OpenApiResponse(OpenApiTypes.OBJECT, description="The batch written.")},
    ),
    destroy=extend_schema(parameters=[DRAFT], responses={204: None}),
)
class ImportViewSet(ProjectScopedMixin, viewsets.ViewSet):
    """Import a CSV, TSV or XLSX file: upload, preview, adjust, confirm (writers only)."""

    parser_classes = [MultiPartParser, FormParser, JSONParser]
    action_roles = dict.fromkeys(["create", "retrieve", "preview", "confirm", "destroy"], "writer")

    def create(self, request, project_pk=None):
        upload = ImportUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        file = upload.validated_data["file"]
        limit = imports.reading.MAX_FILE_BYTES
        if file.size > limit:
            raise PayloadTooLarge(f"The file is larger than {limit // (1024 * 1024)} MB.")
        with import_errors():
            draft, table = imports.create_draft(
                self.project,
                request.user,
                name=file.name,
                data=file.read(),
                default_kind=upload.validated_data.get("default_kind"),
            )
            try:
                preview = imports.preview_draft(self.project, draft, table=table)
            except Exception:
                imports.discard_draft(draft)
                raise
        return Response(preview, status=status.HTTP_201_CREATED)

    def retrieve(self, request, project_pk=None, pk=None):
        with import_errors():
            draft = imports.load_draft(self.project, pk, request.user)
            return Response(imports.preview_draft(self.project, draft))

    @action(detail=True, methods=["post"])
    def preview(self, request, project_pk=None, pk=None):
        """The preview with other options (nothing is written)."""
        with import_errors():
            draft = imports.load_draft(self.project, pk, request.user)
            options = import_options(request.data)
            return Response(imports.preview_draft(self.project, draft, options))

    @action(detail=True, methods=["post"])
    def confirm(self, request, project_pk=None, pk=None):
        """Create the new rows and write one batch of events; the draft is then removed."""
        with import_errors():
            draft = imports.load_draft(self.project, pk, request.user)
            options = import_options(request.data)
            result = imports.confirm_draft(
                self.project, draft, user=request.user, options=options, request=request
            )
        return Response(
            {
                "batch": result.batch,
                "timestamp": result.timestamp,
                "created_rows": len(result.created),
                "created": [e.mnemonic for e in result.created[: imports.LIST_LIMIT]],
                "updated_rows": result.updated,
                "written": result.written,
                "unchanged": result.unchanged,
                "invalid": result.invalid,
            },
            status=status.HTTP_201_CREATED,
        )

    def destroy(self, request, project_pk=None, pk=None):
        with import_errors():
            imports.discard_draft(imports.load_draft(self.project, pk, request.user))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DownloadMixin:
    """Downloads answer with files; errors stay JSON whatever `?format=` asks for."""

    def perform_content_negotiation(self, request, force=False):
        renderer = JSONRenderer()
        return renderer, renderer.media_type


def download(export: exporting.Export):
    if isinstance(export.content, bytes):
        response = HttpResponse(export.content, content_type=export.content_type)
        response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
        return response
    response = FileResponse(export.content, content_type=export.content_type)
    response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
    response.block_size = 64 * 1024
    return response


FORMAT = OpenApiParameter("format", str, enum=list(exporting.FORMATS), description="Default: csv.")
AT = OpenApiParameter("at", OpenApiTypes.DATETIME, description="The sheet as it was at this moment.")


@extend_schema_view(
    list=extend_schema(
        parameters=[FORMAT, AT],
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            (200, exporting.FORMATS["xlsx"]): OpenApiTypes.BINARY,
            (200, "application/json"): OpenApiTypes.OBJECT,
        },
        summary="Download the sheet as CSV, XLSX or JSON",
    )
)
class MatrixExportViewSet(DownloadMixin, ProjectScopedMixin, viewsets.ViewSet):
    """The sheet as a file: now, or as it was at `?at=`."""

    def list(self, request, project_pk=None):
        fmt = request.query_params.get("format") or "csv"
        if fmt not in exporting.FORMATS:
            raise exceptions.ValidationError({"format": ["Choose csv, xlsx or json."]})
        at = parse_moment(request.query_params.get("at"))  # in UTC, within the years 1 to 9999
        export = exporting.export_matrix(self.project, fmt, at=at, user=request.user)
        record_audit_event(
            "metadata.exported", request=request, obj=self.project, format=fmt, at=at and at.isoformat()
        )
        return download(export)


@extend_schema_view(
    list=extend_schema(
        responses={(200, "application/json"): OpenApiTypes.OBJECT},
        summary="Download every event of the project (provenance) as JSON",
    )
)
class HistoryExportViewSet(DownloadMixin, ProjectScopedMixin, viewsets.ViewSet):
    """Every event of the project, oldest first; redacted values stay blank."""

    def list(self, request, project_pk=None):
        export = exporting.export_history(self.project)
        record_audit_event("metadata.history_exported", request=request, obj=self.project)
        return download(export)
