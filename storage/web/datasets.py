"""Pages: the datasets list, a dataset's page (details, access, history, actions) and uploading.

The pages are shells around the storage API for everything that needs a data key: the browser
unwraps it with a private key kept in the browser (`static/storage/`) and decrypts, shares or
uploads itself, so no key passes through these views. Actions without a key (edit the details,
revoke a grant, delete, restore) are plain forms calling the same services as the API.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.mixins import LoginRequiredMixin
from django.db.models import Q
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import path, reverse
from django.views import View
from django.views.generic import ListView, TemplateView

from metadata.models import Membership, Project, ProjectRole
from portal.models import AuditEvent
from storage.models import Dataset, DatasetState, Grant, GrantLevel, KeyState, UserKey
from storage.services import access, lifecycle
from storage.services.datasets import update_details
from storage.services.errors import StorageError

STATE_FILTERS = {
    "": "Available and unfinished",
    DatasetState.AVAILABLE: "Available",
    DatasetState.UPLOADING: "Unfinished uploads",
    DatasetState.DELETED: "Recycle bin",
}
ACCESS_FILTERS = {"": "Any", "mine": "I own", "write": "I can change", "read": "I can read"}

# What the history shows for each audited action.
HISTORY_LABELS = {
    "storage.upload_started": "Upload started",
    "storage.upload_finished": "Upload finished",
    "storage.downloaded": "Downloaded",
    "storage.grant_added": "Access given",
    "storage.grant_changed": "Access changed",
    "storage.grant_revoked": "Access taken away",
    "storage.share_refused": "Sharing refused (wrong key)",
    "storage.dataset_deleted": "Moved to the recycle bin",
    "storage.dataset_restored": "Restored from the recycle bin",
    "storage.dataset_purged": "Purged",
    "storage.dataset_changed": "Details changed",
    "storage.rekeyed": "Re-keyed",
    "storage.rekey_started": "Re-keying started",
    "storage.rekey_refused": "Re-keying refused (wrong key)",
}


def writable_projects(user):
    """Projects the user may add data to (writer or admin), for the upload and edit forms."""
    roles = [ProjectRole.WRITER, ProjectRole.ADMIN]
    return Project.objects.filter(
        pk__in=Membership.objects.filter(user=user, role__in=roles).values("project_id")
    ).order_by("name")


def has_active_key(user) -> bool:
    return UserKey.objects.filter(user=user, state=KeyState.ACTIVE).exists()


def get_dataset(user, mnemonic: str, action: str = "view") -> Dataset:
    """The dataset if `user` may act on it, else 404 (strangers learn nothing)."""
    dataset = (
        Dataset.objects.for_user(user, action)
        .select_related("owner", "project", "uploaded_by")
        .filter(mnemonic=mnemonic)
        .first()
    )
    if dataset is None or dataset.state == DatasetState.PURGED and action != "view":
        raise Http404("No such dataset, or you have no access to it.")
    return dataset


class DatasetListView(LoginRequiredMixin, ListView):
    """The datasets the user holds a grant on (admins: all), with search and filters."""

    template_name = "storage/dataset_list.html"
    paginate_by = 50

    def get_queryset(self):
        user = self.request.user
        params = self.request.GET
        found = Dataset.objects.for_user(user, "view").select_related("owner", "project")
        self.query = params.get("q", "").strip()[:200]
        self.state = params.get("state", "")
        self.access = params.get("access", "")
        self.project = params.get("project", "")
        if self.state not in STATE_FILTERS:
            self.state = ""
        if self.state:
            found = found.filter(state=self.state)
        else:
            found = found.filter(state__in=[DatasetState.AVAILABLE, DatasetState.UPLOADING])
        if self.query:
            found = found.filter(
                Q(name__icontains=self.query)
                | Q(file_name__icontains=self.query)
                | Q(mnemonic__icontains=self.query)
                | Q(description__icontains=self.query)
            )
        if self.access == "mine":
            found = found.filter(owner=user)
        elif self.access in ("read", "write"):
            levels = [GrantLevel.WRITE] if self.access == "write" else [GrantLevel.READ, GrantLevel.WRITE]
            found = found.filter(grants__user=user, grants__level__in=levels)
        else:
            self.access = ""
        if self.project.isascii() and self.project.isdigit():
            found = found.filter(project_id=int(self.project))
        else:
            self.project = ""
        return found.order_by("-created_at", "-id")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        user = self.request.user
        page = context["object_list"]
        levels = dict(
            Grant.objects.filter(user=user, dataset__in=list(page)).values_list("dataset_id", "level")
        )
        context["rows"] = [{"dataset": d, "level": levels.get(d.pk)} for d in page]
        projects = Project.objects.filter(
            pk__in=Dataset.objects.for_user(user, "view").exclude(project=None).values("project_id")
        ).order_by("name")
        filtered = bool(self.query or self.state or self.access or self.project)
        context.update(
            query=self.query,
            state=self.state,
            access=self.access,
            project=self.project,
            states=STATE_FILTERS.items(),
            accesses=ACCESS_FILTERS.items(),
            projects=projects,
            filtered=filtered,
            total=context["paginator"].count,
            has_key=has_active_key(user),
        )
        return context


class DatasetDetailsForm(forms.Form):
    name = forms.CharField(max_length=255, label="Name")
    description = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Description",
        help_text="What the data is; everyone with access, and portal admins, can read this.",
    )
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(), required=False, label="Project", empty_label="(no project)"
    )

    def __init__(self, *args, user=None, current=None, **kwargs):
        super().__init__(*args, **kwargs)
        projects = writable_projects(user)
        if current is not None:
            projects = projects | Project.objects.filter(pk=current.pk)
        self.fields["project"].queryset = projects.distinct().order_by("name")


class DatasetDetailView(LoginRequiredMixin, View):
    """A dataset: details, who has access, history; download, share, revoke, delete, restore.

    Everyone who may see it (grant holders, portal admins) sees the details and the history;
    downloading needs a grant (and a private key in the browser); changing it needs write access.
    """

    template_name = "storage/dataset_detail.html"

    def context(self, dataset: Dataset, form: DatasetDetailsForm | None = None) -> dict:
        user = self.request.user
        grant = access.grant_of(user, dataset)
        can_write = grant is not None and grant.level == GrantLevel.WRITE
        stream_worker = static("storage/download-sw.js")
        grants = list(dataset.grants.select_related("user", "granted_by").order_by("created_at", "id"))
        with_keys = set(
            UserKey.objects.filter(user__in=[g.user for g in grants], state=KeyState.ACTIVE).values_list(
                "user_id", flat=True
            )
        )
        for g in grants:
            g.has_key = g.user_id in with_keys
        events = list(
            AuditEvent.objects.filter(object_type="storage.dataset", object_id=str(dataset.pk)).order_by(
                "-timestamp", "-id"
            )[:100]
        )
        names = dict(
            get_user_model()
            .objects.filter(pk__in={e.details.get("recipient") for e in events if e.details.get("recipient")})
            .values_list("pk", "username")
        )
        for event in events:
            event.label = HISTORY_LABELS.get(event.action, event.action)
            event.recipient = names.get(event.details.get("recipient"))
            event.level = event.details.get("level")
        rekey_url = reverse("storage-api:dataset-rekey", args=[dataset.mnemonic])
        return {
            "dataset": dataset,
            "grant": grant,
            "can_read": grant is not None,
            "can_write": can_write,
            "grants": grants,
            "events": events,
            "form": form
            or DatasetDetailsForm(
                initial={
                    "name": dataset.name,
                    "description": dataset.description,
                    "project": dataset.project,
                },
                user=user,
                current=dataset.project,
            ),
            "levels": GrantLevel.choices,
            "config": {
                "mnemonic": dataset.mnemonic,
                "user": user.get_username(),
                "fileName": dataset.file_name,
                "size": dataset.size,
                "sha256": dataset.sha256,
                "state": dataset.state,
                "rekeyUrl": rekey_url if can_write else None,
                "keysUrl": reverse("storage:key-list"),
                # Downloads streamed to disk by a service worker, where there is no file picker.
                "streamWorker": stream_worker,
                "streamScope": stream_worker.rsplit("/", 1)[0] + "/stream/",
            },
            "is_owner": dataset.owner_id == user.pk,
        }

    def get(self, request, mnemonic: str):
        dataset = get_dataset(request.user, mnemonic)
        return render(request, self.template_name, self.context(dataset))

    def post(self, request, mnemonic: str):
        verb = request.POST.get("action", "")
        dataset = get_dataset(request.user, mnemonic, "delete" if verb in ("delete", "restore") else "change")
        here = reverse("storage:dataset-detail", args=[dataset.mnemonic])
        try:
            if verb == "details":
                access.require_grant(request.user, dataset, GrantLevel.WRITE)
                form = DatasetDetailsForm(request.POST, user=request.user, current=dataset.project)
                if not form.is_valid():
                    return render(request, self.template_name, self.context(dataset, form), status=400)
                self.save_details(dataset, form.cleaned_data)
                messages.success(request, "The details were saved.")
            elif verb == "revoke":
                recipient = get_user_model().objects.filter(pk=_int(request.POST.get("user"))).first()
                if recipient is None:
                    raise StorageError("No such user.")
                access.revoke_grant(dataset, actor=request.user, recipient=recipient, request=request)
                messages.success(
                    request,
                    f"{recipient.username} no longer has access. Re-key the dataset if they may have kept "
                    "a copy of its key.",
                )
            elif verb == "delete":
                lifecycle.delete_dataset(dataset, actor=request.user, request=request)
                messages.success(
                    request,
                    f"“{dataset.name}” is in the recycle bin. It can be restored for "
                    f"{settings.STORAGE_RETENTION_DAYS} days, then it is removed for good.",
                )
            elif verb == "restore":
                lifecycle.restore_dataset(dataset, actor=request.user, request=request)
                messages.success(request, f"“{dataset.name}” was restored.")
            else:
                messages.error(request, "Unknown action.")
        except StorageError as exc:
            messages.error(request, exc.message)
        return HttpResponseRedirect(here)

    def save_details(self, dataset: Dataset, data: dict) -> None:
        update_details(dataset, data, actor=self.request.user, request=self.request)


def _int(value) -> int | None:
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else None


class UploadView(LoginRequiredMixin, TemplateView):
    """Drag and drop files; each is hashed, checked for duplicates, sent chunk by chunk and resumed
    after a reload (`static/storage/upload.js` does the work through the API)."""

    template_name = "storage/upload.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        user = self.request.user
        projects = writable_projects(user)
        selected = _int(self.request.GET.get("project", ""))
        context.update(
            has_key=has_active_key(user),
            pending_keys=UserKey.objects.filter(user=user, state=KeyState.PENDING).exists(),
            projects=projects,
            selected_project=selected,
            config={
                "chunkSize": settings.STORAGE_CHUNK_SIZE,
                "maxSize": settings.STORAGE_MAX_DATASET_SIZE,
                "user": user.get_username(),
                "datasetUrl": reverse("storage:dataset-detail", args=["MNEMONIC"]),
            },
        )
        return context


urlpatterns = [
    path("datasets/", DatasetListView.as_view(), name="dataset-list"),
    path("datasets/upload/", UploadView.as_view(), name="dataset-upload"),
    path("datasets/<str:mnemonic>/", DatasetDetailView.as_view(), name="dataset-detail"),
]
