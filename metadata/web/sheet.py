"""The spreadsheet page of a project: its rows and columns, edited live by several people.

The page is a shell: `static/metadata/sheet.js` loads the matrix from the API, edits through the
project's websocket (`metadata.consumers.SheetConsumer`) and resolves link cells through
`/api/v1/links/`. Everything it does is reachable through the API as well.
"""

from __future__ import annotations

from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import path
from django.views.generic import TemplateView

from metadata.models import EntityKind, Project, ProjectProperty
from metadata.models.properties import LINK_TYPES
from metadata.querysets import ROLE_ORDER, project_role


def column_definitions(project: Project) -> list[dict]:
    """What the sheet needs to know of each column: meaning, type, options and validation."""
    columns = ProjectProperty.objects.filter(project=project).select_related("property", "entity_kind")
    return [
        {
            "key": c.property.key,
            "label": c.property.label,
            "kind": c.entity_kind.key,
            "type": c.property.type,
            "link": c.property.type in LINK_TYPES,
            "unit": c.property.unit,
            "description": c.property.description,
            "options": c.property.options or [],
            "options_only": c.property.options_only,
            "regex": c.property.regex,
            "min": None if c.property.min_value is None else float(c.property.min_value),
            "max": None if c.property.max_value is None else float(c.property.max_value),
            "examples": c.property.examples or [],
            "required": c.required,
        }
        for c in columns
    ]


class SheetView(LoginRequiredMixin, TemplateView):
    template_name = "metadata/sheet.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        project = get_object_or_404(Project, pk=self.kwargs["project_pk"])
        role = project_role(self.request.user, project)
        if role is None:
            raise Http404("No such project, or you are not a member.")
        kinds = list(EntityKind.objects.filter(project=project).select_related("parent"))
        context.update(
            project=project,
            role=role,
            can_write=ROLE_ORDER[role] >= ROLE_ORDER["writer"],
            sheet_config={
                "project": project.pk,
                "projectName": project.name,
                "user": self.request.user.get_username(),
                "role": role,
                "canWrite": ROLE_ORDER[role] >= ROLE_ORDER["writer"],
                "kinds": [
                    {"key": k.key, "label": k.label, "prefix": k.prefix,
                     "parent": k.parent.key if k.parent else None}
                    for k in kinds
                ],
                "columns": column_definitions(project),
                "api": f"/api/v1/projects/{project.pk}/",
                "socket": f"/ws/metadata/projects/{project.pk}/",
                "entityUrl": f"/projects/{project.pk}/e/",
            },
        )
        return context


urlpatterns = [
    path("projects/<int:project_pk>/sheet/", SheetView.as_view(), name="sheet"),
]
