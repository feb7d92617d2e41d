"""Pages: importing a CSV, TSV or XLSX file (upload → preview → confirm) and exporting the sheet.

The preview page is a plain form: a mapping menu per file column, the default kind of new rows,
checkboxes for the normalisation suggestions, and two buttons (update the preview, or confirm).
Nothing is written until the user confirms; the logic lives in `metadata.services.importing`
and `metadata.services.exporting`, which the API uses as well. Non-members get 404, readers may
export but not import (403).
"""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views import View

from metadata.models import Project
from metadata.querysets import has_project_role
from metadata.services import exporting
from metadata.services import importing as imports
from portal.filtersets import as_utc
from portal.services.audit import record_audit_event


def optional_url(name: str, *args) -> str | None:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


class TransferPageMixin(LoginRequiredMixin):
    """Signed in, a member of the project (404 otherwise), with at least `required_role` (403)."""

    required_role = "reader"
    denied_message = "Only project writers can import."

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.project = Project.objects.for_user(request.user, "view").filter(pk=kwargs["project_pk"]).first()
        if self.project is None:
            raise Http404("No such project, or you are not a member.")
        if not has_project_role(request.user, self.project, self.required_role):
            raise PermissionDenied(self.denied_message)
        return super().dispatch(request, *args, **kwargs)

    def context(self, **extra) -> dict:
        return {
            "project": self.project,
            "project_url": optional_url("metadata:project-detail", self.project.pk),
            "sheet_url": optional_url("metadata:sheet", self.project.pk),
            **extra,
        }


# --- import ---------------------------------------------------------------------------------------


class UploadForm(forms.Form):
    file = forms.FileField(
        label="File",
        help_text="CSV, TSV or Excel (.xlsx), with a header row; "
        f"at most {imports.reading.MAX_FILE_BYTES // 2**20} MB and {imports.reading.MAX_ROWS:,} rows.",
    )
    default_kind = forms.ChoiceField(
        label="Kind of new rows",
        required=False,
        help_text="Used for rows without an id when the file has no kind column.",
    )

    def __init__(self, *args, project: Project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["default_kind"].choices = [("", "Decide from the file's columns")] + [
            (k.key, k.label) for k in project.entity_kinds.all()
        ]


class ImportView(TransferPageMixin, View):
    """The upload form, and the user's imports that wait for confirmation."""

    required_role = "writer"

    def render_page(self, request, form, *, error: str | None = None, status: int = 200):
        drafts = imports.list_drafts(self.project, request.user)
        return render(
            request,
            "metadata/import.html",
            self.context(form=form, error=error, drafts=drafts),
            status=status,
        )

    def get(self, request, project_pk: int):
        return self.render_page(request, UploadForm(project=self.project))

    def post(self, request, project_pk: int):
        form = UploadForm(request.POST, request.FILES, project=self.project)
        if not form.is_valid():
            return self.render_page(request, form, status=400)
        upload = form.cleaned_data["file"]
        if upload.size > imports.reading.MAX_FILE_BYTES:
            error = f"The file is larger than {imports.reading.MAX_FILE_BYTES // (1024 * 1024)} MB; split it."
            return self.render_page(request, form, error=error, status=413)
        try:
            draft, _ = imports.create_draft(
                self.project,
                request.user,
                name=upload.name,
                data=upload.read(),
                default_kind=form.cleaned_data["default_kind"],
            )
        except (imports.ImportFileError, imports.ImportRequestError) as exc:
            return self.render_page(request, form, error=f"{upload.name}: {exc}", status=400)
        return HttpResponseRedirect(reverse("metadata:import-preview", args=[self.project.pk, draft.id]))


def options_from_form(data, column_count: int) -> imports.Options:
    mapping = {str(i): data.get(f"map-{i}", "") for i in range(column_count) if f"map-{i}" in data}
    return imports.Options(
        mapping=mapping or None,
        default_kind=data.get("default_kind") or None,
        clear_empty=data.get("clear_empty") in ("on", "1", "true"),
        suggestions=frozenset(data.getlist("suggestion")),
    )


class ImportPreviewView(TransferPageMixin, View):
    """What the import would do; the user adjusts the mapping and suggestions, then confirms."""

    required_role = "writer"

    def load(self, request, draft_id):
        try:
            return imports.load_draft(self.project, draft_id, request.user)
        except imports.DraftExpiredError as exc:
            messages.error(request, str(exc))
            return None
        except imports.DraftNotFoundError:
            raise Http404("No such import.")

    def render_preview(self, request, draft, options, *, error=None, status=200):
        try:
            preview = imports.preview_draft(self.project, draft, options)
        except imports.ImportRequestError as exc:
            error, status = str(exc), 400
            try:  # show the automatic preview with the message
                preview = imports.preview_draft(self.project, draft, imports.Options(all_suggestions=True))
            except imports.ImportRequestError:
                messages.error(request, f"{draft.name}: {exc}")
                return HttpResponseRedirect(reverse("metadata:import", args=[self.project.pk]))
        except imports.ImportFileError as exc:
            messages.error(request, f"{draft.name}: {exc}")
            return HttpResponseRedirect(reverse("metadata:import", args=[self.project.pk]))
        for row in preview["rows"]:
            row["changes_text"] = "; ".join(
                f"{key} → {'(cleared)' if value is None else value}" for key, value in row["changes"].items()
            )
        return render(
            request,
            "metadata/import_preview.html",
            self.context(draft=draft, preview=preview, error=error),
            status=status,
        )

    def get(self, request, project_pk: int, draft_id):
        draft = self.load(request, draft_id)
        if draft is None:
            return HttpResponseRedirect(reverse("metadata:import", args=[self.project.pk]))
        return self.render_preview(request, draft, imports.Options(all_suggestions=True))

    def post(self, request, project_pk: int, draft_id):
        draft = self.load(request, draft_id)
        if draft is None:
            return HttpResponseRedirect(reverse("metadata:import", args=[self.project.pk]))
        options = options_from_form(request.POST, imports.MAX_COLUMNS)
        if request.POST.get("action") != "confirm":
            return self.render_preview(request, draft, options)
        try:
            result = imports.confirm_draft(
                self.project, draft, user=request.user, options=options, request=request
            )
        except imports.DraftNotFoundError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(reverse("metadata:import", args=[self.project.pk]))
        except (imports.ImportRequestError, imports.ImportFileError) as exc:
            return self.render_preview(request, draft, options, error=str(exc), status=400)
        messages.success(
            request,
            f"Imported {draft.name}: {len(result.created)} new row(s), {result.updated} updated, "
            f"{result.written} value(s) written"
            + (f", {result.invalid} flagged as invalid" if result.invalid else "")
            + (f" (batch {result.batch})." if result.batch else "."),
        )
        target = optional_url("metadata:sheet", self.project.pk) or reverse(
            "metadata:import", args=[self.project.pk]
        )
        return HttpResponseRedirect(target)


class ImportCancelView(TransferPageMixin, View):
    required_role = "writer"

    def post(self, request, project_pk: int, draft_id):
        try:
            draft = imports.load_draft(self.project, draft_id, request.user)
        except imports.DraftExpiredError:
            draft = None
        except imports.DraftNotFoundError:
            raise Http404("No such import.")
        if draft is not None:
            imports.discard_draft(draft)
        messages.info(request, "Import cancelled; nothing was written.")
        return HttpResponseRedirect(reverse("metadata:import", args=[self.project.pk]))


# --- export ---------------------------------------------------------------------------------------


def parse_local_moment(text: str) -> dt.datetime | None:
    """A moment from a form: ISO 8601 with a time zone, or local time (the portal's time zone)."""
    try:
        moment = parse_datetime(text.strip())
    except ValueError:
        moment = None
    if moment is None:
        raise ValueError(text)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_current_timezone())
    return as_utc(moment)  # ValueError outside the years 1 to 9999 in UTC


class ExportView(TransferPageMixin, View):
    """Links to download the sheet (now or at a past moment) and the full history."""

    def get(self, request, project_pk: int):
        return self.render_page(request)

    def render_page(self, request, *, error: str | None = None, status: int = 200, at: str = ""):
        return render(
            request,
            "metadata/export.html",
            self.context(
                error=error,
                at=at,
                formats=list(exporting.FORMATS),
                can_import=has_project_role(request.user, self.project, "writer"),
                time_zone=timezone.get_current_timezone_name(),
            ),
            status=status,
        )


class ExportDownloadView(ExportView):
    def get(self, request, project_pk: int):
        fmt = request.GET.get("format") or "csv"
        text = request.GET.get("at", "").strip()
        if fmt not in exporting.FORMATS:
            return self.render_page(request, error="Choose CSV, XLSX or JSON.", status=400, at=text)
        at = None
        if text:
            try:
                at = parse_local_moment(text)
            except ValueError:
                error = "Give a date and time such as 2026-05-01T12:00."
                return self.render_page(request, error=error, status=400, at=text)
        export = exporting.export_matrix(self.project, fmt, at=at, user=request.user)
        record_audit_event(
            "metadata.exported", request=request, obj=self.project, format=fmt, at=at and at.isoformat()
        )
        response = HttpResponse(export.content, content_type=export.content_type)
        response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
        return response


class HistoryDownloadView(TransferPageMixin, View):
    def get(self, request, project_pk: int):
        export = exporting.export_history(self.project)
        record_audit_event("metadata.history_exported", request=request, obj=self.project)
        response = FileResponse(export.content, content_type=export.content_type)
        response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
        return response


urlpatterns = [
    path("projects/<int:project_pk>/import/", ImportView.as_view(), name="import"),
    path(
        "projects/<int:project_pk>/import/<uuid:draft_id>/",
        ImportPreviewView.as_view(),
        name="import-preview",
    ),
    path(
        "projects/<int:project_pk>/import/<uuid:draft_id>/cancel/",
        ImportCancelView.as_view(),
        name="import-cancel",
    ),
    path("projects/<int:project_pk>/export/", ExportView.as_view(), name="export"),
    path("projects/<int:project_pk>/export/download/", ExportDownloadView.as_view(), name="export-download"),
    path("projects/<int:project_pk>/export/history/", HistoryDownloadView.as_view(), name="export-history"),
]
