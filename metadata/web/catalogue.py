"""Pages: the property catalogue (portal admins edit it) and the shipped templates."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.views import View
from django.views.generic import ListView

from metadata.models import (
    Property,
    PropertyType,
    Template,
)
from metadata.services import projects as project_service
from metadata.web.common import (
    PropertyForm,
    range_text,
)
from portal.services.audit import record_audit_event

# --- the property catalogue and templates --------------------------------------------------------


class PropertyListView(LoginRequiredMixin, ListView):
    """The catalogue of properties: every signed-in user reads it, portal admins edit it."""

    template_name = "metadata/property_list.html"
    paginate_by = 100

    def get_queryset(self):
        queryset = Property.objects.for_user(self.request.user).annotate(template_count=Count("templates"))
        self.query = self.request.GET.get("q", "").strip()[:200]
        if self.query:
            queryset = queryset.filter(
                Q(key__icontains=self.query)
                | Q(label__icontains=self.query)
                | Q(description__icontains=self.query)
            )
        self.type = self.request.GET.get("type", "")
        if self.type in PropertyType.values:
            queryset = queryset.filter(type=self.type)
        else:
            self.type = ""
        return queryset.order_by("label", "key")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(
            query=self.query,
            type=self.type,
            types=PropertyType.choices,
            total=context["paginator"].count,
            can_edit=self.request.user.is_staff,
        )
        for prop in context["object_list"]:
            prop.range_text = range_text(prop)
        return context


class PropertyEditView(LoginRequiredMixin, View):
    """Portal admins create (`pk` None) or edit a catalogue property."""

    template_name = "metadata/property_form.html"

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated and not request.user.is_staff:
            raise PermissionDenied("Only portal administrators edit the property catalogue.")
        return super().dispatch(request, *args, **kwargs)

    def _instance(self, pk: int | None) -> Property | None:
        if pk is None:
            return None
        prop = Property.objects.for_user(self.request.user).filter(pk=pk).first()
        if prop is None:
            raise Http404("No such property.")
        return prop

    def _render(self, request, form, status: int = 200):
        instance = form.instance if form.instance.pk else None
        context = {"form": form, "property": instance, "types": PropertyType.choices}
        if instance is not None:
            context["used_by"] = (
                instance.project_properties.values("project_id", "project__name")
                .distinct()
                .order_by("project__name")
            )
        return render(request, self.template_name, context, status=status)

    def get(self, request, pk: int | None = None):
        return self._render(request, PropertyForm(instance=self._instance(pk)))

    def post(self, request, pk: int | None = None):
        instance = self._instance(pk)
        form = PropertyForm(request.POST, instance=instance)
        if not form.is_valid():
            return self._render(request, form, status=400)
        try:
            with transaction.atomic():
                prop = form.save()
        except IntegrityError:
            form.add_error("key", "A property with this key exists already.")
            return self._render(request, form, status=400)
        record_audit_event(
            "metadata.property_changed" if instance else "metadata.property_created",
            request=request,
            obj=prop,
            changed=form.changed_data,
        )
        messages.success(request, f"Property “{prop.label}” saved.")
        return HttpResponseRedirect(reverse("metadata:property-list") + f"?q={prop.key}")


class TemplateListView(LoginRequiredMixin, View):
    """The templates a project can start from: their kinds of rows and each kind's properties."""

    def get(self, request):
        templates = []
        for template in Template.objects.for_user(request.user).prefetch_related(
            "template_properties__property"
        ):
            links = list(template.template_properties.all())
            kinds = template.entity_kinds or project_service.DEFAULT_KINDS
            labels = {k["key"]: k.get("label", k["key"]) for k in kinds}
            templates.append(
                {
                    "template": template,
                    "kinds": [
                        {
                            "spec": kind,
                            "parent": labels.get(kind.get("parent")),
                            "links": [link for link in links if link.entity_kind == kind["key"]],
                        }
                        for kind in kinds
                    ],
                }
            )
        return render(request, "metadata/template_list.html", {"templates": templates})


urlpatterns = [
    path("properties/", PropertyListView.as_view(), name="property-list"),
    path("properties/new/", PropertyEditView.as_view(), name="property-create"),
    path("properties/<int:pk>/edit/", PropertyEditView.as_view(), name="property-edit"),
    path("templates/", TemplateListView.as_view(), name="template-list"),
]
