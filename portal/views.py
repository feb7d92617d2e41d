"""Core pages: home, profile with API tokens, jobs. Thin; logic lives in services."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.generic import DetailView, ListView, TemplateView

from portal.filtersets import JobFilterSet
from portal.forms import ApiTokenForm
from portal.models import ApiToken, Job
from portal.querysets import action_for_method
from portal.services import jobs as job_service
from portal.services import tokens as token_service


class RestrictedViewMixin(LoginRequiredMixin):
    """Base for pages showing restricted models: the queryset is always filtered per user."""

    model = None

    def get_queryset(self):
        return self.model.objects.for_user(self.request.user, action_for_method(self.request.method))


class HomeView(LoginRequiredMixin, TemplateView):
    template_name = "portal/home.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["recent_jobs"] = (
            Job.objects.for_user(self.request.user).select_related("created_by")[:5]
        )
        return context


class ProfileView(LoginRequiredMixin, View):
    """The user's details and personal API tokens (create, shown once; revoke)."""

    template_name = "portal/profile.html"

    def _render(self, request, form, new_secret=None, status=200):
        tokens = ApiToken.objects.for_user(request.user)
        return render(request, self.template_name, {
            "form": form, "tokens": tokens, "new_secret": new_secret,
        }, status=status)

    def get(self, request):
        form = ApiTokenForm(allowed_scopes=token_service.allowed_scopes(request.user))
        return self._render(request, form)

    def post(self, request):
        form = ApiTokenForm(request.POST, allowed_scopes=token_service.allowed_scopes(request.user))
        if not form.is_valid():
            return self._render(request, form, status=400)
        try:
            token, secret = token_service.create_api_token(
                request.user, name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"],
                expires_at=form.expires_at(), request=request,
            )
        except token_service.TokenError as exc:
            form.add_error(None, str(exc))
            return self._render(request, form, status=400)
        messages.success(request, f"Token “{token.name}” created. Copy it now: it is shown only once.")
        fresh = ApiTokenForm(allowed_scopes=token_service.allowed_scopes(request.user))
        return self._render(request, fresh, new_secret=secret)


class TokenRevokeView(RestrictedViewMixin, View):
    model = ApiToken

    def post(self, request, pk: int):
        token = self.get_queryset().filter(pk=pk).first()
        if token is None:
            raise Http404("No such token")
        try:
            token_service.revoke_api_token(token, actor=request.user, request=request)
            messages.success(request, f"Token “{token.name}” revoked.")
        except token_service.TokenError as exc:
            messages.error(request, str(exc))
        return HttpResponseRedirect(reverse("portal:profile"))


class JobListView(RestrictedViewMixin, ListView):
    """All jobs the user may see, updated live over the websocket."""

    model = Job
    template_name = "portal/job_list.html"
    paginate_by = 50

    def get_queryset(self):
        queryset = super().get_queryset().select_related("created_by", "target_type")
        self.filterset = JobFilterSet(self.request.GET or None, queryset=queryset)
        return self.filterset.qs if self.filterset.is_bound and self.filterset.is_valid() else queryset

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["filterset"] = self.filterset
        context["startable_kinds"] = job_service.startable_kinds(self.request.user)
        return context


class JobDetailView(RestrictedViewMixin, DetailView):
    model = Job
    template_name = "portal/job_detail.html"
    context_object_name = "job"


class JobActionView(RestrictedViewMixin, View):
    """Start, cancel or retry a job from a page (the API offers the same)."""

    model = Job

    def post(self, request, pk: int | None = None, verb: str = "start"):
        if verb == "start":
            kind = job_service.JOB_KINDS.get(request.POST.get("kind", ""))
            if not job_service.may_start(kind, request.user):
                raise PermissionDenied("You may not start this kind of job.")
            job_service.start_job(kind.name, user=request.user)
            messages.info(request, f"{kind.label} started.")
            return HttpResponseRedirect(reverse("portal:job-list"))
        job = Job.objects.for_user(request.user, "change").filter(pk=pk).first()
        if job is None:
            raise Http404("No such job, or you may not change it")
        try:
            if verb == "cancel":
                job_service.request_cancel(job)
                messages.info(request, "Cancel requested.")
            else:
                kind = job_service.JOB_KINDS.get(job.kind)
                if kind is None or (kind.staff_only and not request.user.is_staff):
                    raise PermissionDenied("You may not start this kind of job.")
                job = job_service.retry_job(job, request.user)
                messages.info(request, "Started again.")
        except job_service.JobStateError as exc:
            messages.error(request, str(exc))
        next_url = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
            next_url = reverse("portal:job-list")
        return HttpResponseRedirect(next_url)
