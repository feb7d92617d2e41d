"""Pages: a row's deep link with its QR code, and printable label sheets."""

from __future__ import annotations

from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import Http404
from django.shortcuts import render
from django.urls import path, reverse
from django.views import View

from metadata.models import (
    Entity,
    Event,
    EventKind,
    Project,
    ProjectProperty,
)
from metadata.querysets import project_role
from metadata.services import qr as qr_service
from metadata.services.events import current_values
from metadata.services.values import validation_message
from metadata.web.common import (
    LABELS_PER_PAGE,
    MAX_LABELS,
    LabelForm,
    ProjectPageMixin,
    display_value,
    get_project,
    option_description,
    optional_url,
)

# --- entities: deep links, QR codes, labels ------------------------------------------------------


def member_entity(request, project: Project, mnemonic: str) -> Entity:
    entity = (
        Entity.objects.for_user(request.user)
        .filter(project=project, mnemonic=mnemonic)
        .select_related("kind", "parent__kind", "created_by")
        .first()
    )
    if entity is None:
        raise Http404("No such row in this project.")
    return entity


class EntityDetailView(ProjectPageMixin, View):
    """The deep link of an entity: its values, family, history and QR code."""

    def get(self, request, project_pk: int, mnemonic: str):
        project = self.project
        entity = member_entity(request, project, mnemonic)
        columns = list(
            ProjectProperty.objects.filter(project=project, entity_kind=entity.kind)
            .select_related("property")
            .order_by("position", "id")
        )
        values = current_values(project, {(entity.pk, c.property_id) for c in columns})
        rows = []
        for column in columns:
            prop, value = column.property, values.get((entity.pk, column.property_id))
            rows.append(
                {
                    "column": column,
                    "property": prop,
                    "value": value,
                    "display": display_value(prop, value),
                    "option": option_description(prop, value) if value is not None else "",
                    "invalid": validation_message(prop, value),
                    "missing": value is None and column.required,
                }
            )
        children = entity.children.select_related("kind").order_by("kind__position", "id")
        history = (
            Event.objects.filter(entity=entity)
            .select_related("property", "author")
            .order_by("-timestamp", "-id")[:25]
        )
        deep_link = qr_service.entity_url(entity, request)
        context = {
            **self.base_context(),
            "entity": entity,
            "rows": rows,
            "children": children[:200],
            "child_count": children.count(),
            "history": [
                {
                    "event": e,
                    "display": display_value(e.property, e.value),
                    "redaction": e.kind == EventKind.REDACTION,
                }
                for e in history
            ],
            "deep_link": deep_link,
            "qr": qr_service.qr_svg_inline(deep_link, scale=4, title=f"QR code of {entity.mnemonic}"),
            "sheet_url": optional_url("metadata:sheet", project.pk),
            "api_url": reverse("metadata-api:entity-detail", args=[project.pk, entity.pk]),
        }
        return render(request, "metadata/entity_detail.html", context)


class EntityQRView(LoginRequiredMixin, View):
    """The entity's QR code as SVG or PNG; it encodes the absolute deep link."""

    def get(self, request, project_pk: int, mnemonic: str, fmt: str):
        project = get_project(project_pk)
        if project_role(request.user, project) is None:
            raise Http404("No such row.")
        entity = member_entity(request, project, mnemonic)
        return qr_service.entity_qr_response(
            entity, request, fmt, download=request.GET.get("download") == "1"
        )


class LabelsView(ProjectPageMixin, View):
    """A printable A4 sheet of labels: QR code, id, project and one or two values each."""

    def get(self, request, project_pk: int):
        project = self.project
        columns = list(ProjectProperty.objects.filter(project=project).select_related("property"))
        form = LabelForm(request.GET or None, project=project, columns=columns)
        context = {**self.base_context(), "form": form, "labels": [], "missing": [], "truncated": False}
        if form.is_bound and form.is_valid():
            context.update(self._labels(request, form, columns))
            layout = form.cleaned_data["layout"] or "3x8"
            per_page = LABELS_PER_PAGE[layout]
            labels = context["labels"]
            context["layout"] = layout
            context["pages"] = [labels[i : i + per_page] for i in range(0, len(labels), per_page)]
        return render(request, "metadata/labels.html", context, status=400 if form.errors else 200)

    def _labels(self, request, form: LabelForm, columns: list[ProjectProperty]) -> dict:
        project = self.project
        entities = Entity.objects.for_user(request.user).filter(project=project).select_related("kind")
        if form.cleaned_data["kind"]:
            entities = entities.filter(kind__key=form.cleaned_data["kind"])
        wanted = form.mnemonic_list()
        missing: list[str] = []
        if wanted:
            found = {e.mnemonic: e for e in entities.filter(mnemonic__in=wanted)}
            missing = [m for m in wanted if m not in found]
            chosen = [found[m] for m in wanted if m in found]
        else:
            chosen = list(entities.order_by("kind__position", "id")[: MAX_LABELS + 1])
        truncated = len(chosen) > MAX_LABELS
        chosen = chosen[:MAX_LABELS]
        props = {c.property.key: c.property for c in columns}
        shown = [props[k] for k in (form.cleaned_data["field_1"], form.cleaned_data["field_2"]) if k in props]
        values = current_values(project, {(e.pk, p.pk) for e in chosen for p in shown})
        labels = []
        for entity in chosen:
            url = qr_service.entity_url(entity, request)
            labels.append(
                {
                    "entity": entity,
                    "qr": qr_service.qr_svg_inline(
                        url, scale=2, border=1, title=f"QR code of {entity.mnemonic}"
                    ),
                    "values": [
                        {"property": p, "display": display_value(p, values.get((entity.pk, p.pk)))}
                        for p in shown
                        if values.get((entity.pk, p.pk)) is not None
                    ],
                }
            )
        return {"labels": labels, "missing": missing, "truncated": truncated, "max_labels": MAX_LABELS}


urlpatterns = [
    path("projects/<int:project_pk>/labels/", LabelsView.as_view(), name="project-labels"),
    path("projects/<int:project_pk>/e/<str:mnemonic>/", EntityDetailView.as_view(), name="entity-detail"),
    path(
        "projects/<int:project_pk>/e/<str:mnemonic>/qr.svg",
        EntityQRView.as_view(),
        {"fmt": "svg"},
        name="entity-qr-svg",
    ),
    path(
        "projects/<int:project_pk>/e/<str:mnemonic>/qr.png",
        EntityQRView.as_view(),
        {"fmt": "png"},
        name="entity-qr-png",
    ),
]
