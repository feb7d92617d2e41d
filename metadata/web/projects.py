"""Pages: projects – find, create, overview, join, members and settings."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.mixins import LoginRequiredMixin
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.views import View
from django.views.generic import ListView

from metadata.models import (
    Entity,
    JoinRequest,
    JoinRequestState,
    Membership,
    Project,
    ProjectProperty,
    ProjectRole,
    Template,
)
from metadata.querysets import project_role
from metadata.services import projects as project_service
from metadata.services import qr as qr_service
from metadata.web.common import (
    AddColumnForm,
    JoinForm,
    ProjectDetailsForm,
    ProjectForm,
    ProjectPageMixin,
    get_project,
    optional_url,
    public_page,
)
from portal.services.audit import record_audit_event

# --- projects -----------------------------------------------------------------------------------


class ProjectListView(LoginRequiredMixin, ListView):
    """Every project by name and description, with the user's role or a way to ask to join."""

    template_name = "metadata/project_list.html"
    paginate_by = 50

    def get_queryset(self):
        user = self.request.user
        queryset = Project.objects.findable(user).select_related("owner")
        self.query = self.request.GET.get("q", "").strip()[:200]
        if self.query:
            queryset = queryset.filter(Q(name__icontains=self.query) | Q(description__icontains=self.query))
        self.mine = self.request.GET.get("mine") == "1"
        if self.mine:
            queryset = queryset.filter(memberships__user=user)
        return queryset.order_by("name")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        user = self.request.user
        roles = dict(Membership.objects.filter(user=user).values_list("project_id", "role"))
        pending = set(
            JoinRequest.objects.filter(user=user, state=JoinRequestState.PENDING).values_list(
                "project_id", flat=True
            )
        )
        labels = dict(ProjectRole.choices)
        context["rows"] = [
            {
                "project": project,
                "role": roles.get(project.pk),
                "role_label": labels.get(roles.get(project.pk), ""),
                "pending": project.pk in pending,
            }
            for project in context["object_list"]
        ]
        context.update(query=self.query, mine=self.mine, total=context["paginator"].count)
        return context


class ProjectCreateView(LoginRequiredMixin, View):
    template_name = "metadata/project_form.html"

    def _render(self, request, form, status: int = 200):
        templates = Template.objects.for_user(request.user).prefetch_related("template_properties")
        return render(request, self.template_name, {"form": form, "templates": templates}, status=status)

    def get(self, request):
        return self._render(request, ProjectForm())

    def post(self, request):
        form = ProjectForm(request.POST)
        if not form.is_valid():
            return self._render(request, form, status=400)
        try:
            with transaction.atomic():
                project = project_service.create_project(
                    name=form.cleaned_data["name"],
                    description=form.cleaned_data["description"],
                    owner=request.user,
                    template=form.cleaned_data["template"],
                    request=request,
                )
        except IntegrityError:
            form.add_error("name", "A project with this name exists already.")
            return self._render(request, form, status=400)
        messages.success(request, f"Project “{project.name}” created. You are its admin.")
        return HttpResponseRedirect(reverse("metadata:project-detail", args=[project.pk]))


class ProjectDetailView(ProjectPageMixin, View):
    """A member's overview: kinds of rows with counts, members, and the ways into the data."""

    stranger_status = 200

    def get(self, request, project_pk: int):
        project = self.project
        row_query = request.GET.get("row", "").strip()[:30]
        row_error = ""
        if row_query:
            entity = (
                Entity.objects.for_user(request.user)
                .filter(project=project, mnemonic__iexact=row_query)
                .first()
            )
            if entity is not None:
                return HttpResponseRedirect(qr_service.entity_path(entity))
            row_error = f"There is no row “{row_query}” in this project."
        kinds = project.entity_kinds.select_related("parent").annotate(
            entity_count=Count("entities", distinct=True), column_count=Count("columns", distinct=True)
        )
        context = {
            **self.base_context(),
            "kinds": kinds,
            "memberships": project.memberships.select_related("user"),
            "recent": Entity.objects.for_user(request.user)
            .filter(project=project)
            .select_related("kind")
            .order_by("-id")[:10],
            "pending_count": (
                project.join_requests.filter(state=JoinRequestState.PENDING).count()
                if self.role == ProjectRole.ADMIN
                else 0
            ),
            "row_query": row_query,
            "row_error": row_error,
            "sheet_url": optional_url("metadata:sheet", project.pk),
            "import_url": optional_url("metadata:import", project.pk),
            "export_url": optional_url("metadata:export", project.pk),
            "api_url": reverse("metadata-api:project-detail", args=[project.pk]),
        }
        return render(request, "metadata/project_detail.html", context)


class ProjectJoinView(LoginRequiredMixin, View):
    """Ask a project's admins to be let in."""

    def post(self, request, project_pk: int):
        project = get_project(project_pk)
        form = JoinForm(request.POST)
        if not form.is_valid():
            return public_page(request, project, status=400, form=form)
        try:
            project_service.request_to_join(
                project, request.user, message=form.cleaned_data["message"], request=request
            )
        except project_service.ProjectError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, "Your request was sent. A project admin will accept or decline it.")
        return HttpResponseRedirect(reverse("metadata:project-detail", args=[project.pk]))


class MembersView(ProjectPageMixin, View):
    """Project admins: members and their roles, adding people, and requests to join."""

    required_role = "admin"

    def get(self, request, project_pk: int):
        memberships = list(self.project.memberships.select_related("user"))
        admin_count = sum(1 for m in memberships if m.role == ProjectRole.ADMIN)
        for membership in memberships:  # the service refuses to leave a project without an admin
            membership.is_last_admin = membership.role == ProjectRole.ADMIN and admin_count == 1
        context = {
            **self.base_context(),
            "memberships": memberships,
            "join_requests": self.project.join_requests.filter(state=JoinRequestState.PENDING).select_related(
                "user"
            ),
            "decided": self.project.join_requests.exclude(state=JoinRequestState.PENDING).select_related(
                "user", "decided_by"
            )[:10],
            "roles": ProjectRole.choices,
        }
        return render(request, "metadata/members.html", context)

    def post(self, request, project_pk: int):
        project, action = self.project, request.POST.get("action", "")
        here = reverse("metadata:project-members", args=[project.pk])
        role = request.POST.get("role", ProjectRole.READER)
        if role not in ProjectRole.values:
            messages.error(request, "Choose reader, writer or admin.")
            return HttpResponseRedirect(here)
        try:
            if action in ("role", "remove"):
                membership = self._membership(request.POST.get("user"))
                if action == "role":
                    project_service.set_member(
                        project, membership.user, role, actor=request.user, request=request
                    )
                    messages.success(request, f"{membership.user.username} is now {role}.")
                else:
                    project_service.remove_member(
                        project, membership.user, actor=request.user, request=request
                    )
                    messages.success(request, f"{membership.user.username} was removed from the project.")
            elif action == "add":
                username = request.POST.get("username", "").strip()
                user = get_user_model().objects.filter(username=username, is_active=True).first()
                if user is None:
                    messages.error(request, f"No active user is called “{username}”.")
                    return HttpResponseRedirect(here)
                project_service.set_member(project, user, role, actor=request.user, request=request)
                messages.success(request, f"{user.username} is now {role}.")
            elif action in ("accept", "decline"):
                join = self._join_request(request.POST.get("request"))
                project_service.decide_join_request(
                    join, accept=action == "accept", actor=request.user, role=role, request=request
                )
                if action == "accept":
                    messages.success(request, f"{join.user.username} joined as {role}.")
                else:
                    messages.success(request, f"The request of {join.user.username} was declined.")
            else:
                messages.error(request, "Unknown action.")
        except project_service.ProjectError as exc:
            messages.error(request, str(exc))
        if project_role(request.user, project) != ProjectRole.ADMIN:  # the user gave up admin
            return HttpResponseRedirect(reverse("metadata:project-detail", args=[project.pk]))
        return HttpResponseRedirect(here)

    def _membership(self, user_id) -> Membership:
        membership = (
            Membership.objects.filter(project=self.project, user_id=_as_id(user_id))
            .select_related("user")
            .first()
        )
        if membership is None:
            raise Http404("No such member.")
        return membership

    def _join_request(self, request_id) -> JoinRequest:
        join = (
            JoinRequest.objects.filter(project=self.project, pk=_as_id(request_id))
            .select_related("user")
            .first()
        )
        if join is None:
            raise Http404("No such request to join.")
        return join


def _as_id(value) -> int:
    """A primary key from form input; anything else is a 404, never a 500."""
    text = str(value or "")
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise Http404("No such item.")
    return int(text)


class ProjectSettingsView(ProjectPageMixin, View):
    """Project admins: name and description, and the columns of each kind of row."""

    required_role = "admin"
    template_name = "metadata/project_settings.html"

    def _render(self, request, *, details=None, add_column=None, status: int = 200):
        project = self.project
        columns = ProjectProperty.objects.filter(project=project).select_related("property", "entity_kind")
        kinds = []
        for kind in project.entity_kinds.select_related("parent"):
            kinds.append({"kind": kind, "columns": [c for c in columns if c.entity_kind_id == kind.pk]})
        context = {
            **self.base_context(),
            "details": details or ProjectDetailsForm(instance=project),
            "add_column": add_column or AddColumnForm(project=project),
            "kinds": kinds,
            "templates": Template.objects.for_user(request.user),
        }
        return render(request, self.template_name, context, status=status)

    def get(self, request, project_pk: int):
        return self._render(request)

    def post(self, request, project_pk: int):
        project, action = self.project, request.POST.get("action", "")
        if action == "details":
            form = ProjectDetailsForm(request.POST, instance=get_project(project.pk))
            if not form.is_valid():
                return self._render(request, details=form, status=400)
            try:
                with transaction.atomic():
                    form.save()
            except IntegrityError:
                form.add_error("name", "A project with this name exists already.")
                return self._render(request, details=form, status=400)
            record_audit_event(
                "project.updated", request=request, obj=form.instance, changed=form.changed_data
            )
            messages.success(request, "Project details saved.")
        elif action == "add_column":
            form = AddColumnForm(request.POST, project=project)
            if not form.is_valid():
                return self._render(request, add_column=form, status=400)
            kind, prop = form.cleaned_data["entity_kind"], form.cleaned_data["property"]
            try:
                project_service.add_column(project, kind, prop, required=form.cleaned_data["required"],
                                           actor=request.user, request=request)
            except project_service.ProjectError as exc:
                form.add_error("property", str(exc))
                return self._render(request, add_column=form, status=400)
            messages.success(request, f"Column “{prop.label}” added to {kind.label} rows.")
        elif action in ("remove_column", "move_up", "move_down", "toggle_required"):
            column = (
                ProjectProperty.objects.filter(project=project, pk=_as_id(request.POST.get("column")))
                .select_related("property", "entity_kind")
                .first()
            )
            if column is None:
                raise Http404("No such column.")
            if action == "remove_column":
                project_service.remove_column(column, actor=request.user, request=request)
                messages.success(
                    request,
                    f"Column “{column.property.label}” removed from {column.entity_kind.label} rows. "
                    "Its recorded values stay in the history; add the column again to see them.",
                )
            elif action == "toggle_required":
                project_service.change_column(column, required=not column.required, actor=request.user,
                                              request=request)
                messages.success(
                    request,
                    f"“{column.property.label}” is now {'required' if column.required else 'optional'}.",
                )
            else:
                index = list(
                    ProjectProperty.objects.filter(project=project, entity_kind=column.entity_kind_id)
                    .order_by("position", "id").values_list("pk", flat=True)
                ).index(column.pk)
                project_service.change_column(
                    column, position=max(0, index + (-1 if action == "move_up" else 1)),
                    actor=request.user, request=request,
                )
        elif action == "apply_template":
            template = (
                Template.objects.for_user(request.user)
                .filter(pk=_as_id(request.POST.get("template")))
                .first()
            )
            if template is None:
                raise Http404("No such template.")
            project_service.apply_template_audited(project, template, actor=request.user, request=request)
            messages.success(request, f"Kinds and columns of “{template.name}” that were missing were added.")
        else:
            messages.error(request, "Unknown action.")
        return HttpResponseRedirect(reverse("metadata:project-settings", args=[project.pk]))


urlpatterns = [
    path("projects/", ProjectListView.as_view(), name="project-list"),
    path("projects/new/", ProjectCreateView.as_view(), name="project-create"),
    path("projects/<int:project_pk>/", ProjectDetailView.as_view(), name="project-detail"),
    path("projects/<int:project_pk>/join/", ProjectJoinView.as_view(), name="project-join"),
    path("projects/<int:project_pk>/members/", MembersView.as_view(), name="project-members"),
    path("projects/<int:project_pk>/settings/", ProjectSettingsView.as_view(), name="project-settings"),
]
