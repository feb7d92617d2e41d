"""Pages of upload links: managing your links, and the upload page a link opens without an account.

The management page lists your links (state, limits, uses, the datasets that arrived), creates
one (its address is shown once) and revokes one. The upload page needs no account and no key:
the browser hashes each chunk (crypto.subtle) and sends it with the link's secret to the link API
(`storage/api/links.py`); the server encrypts it for the link owner's keys. Logic lives in
`storage.services.links`, which the API uses too.

The routes are in `storage/web/link_urls.py` (namespace `storage-links`).
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.db.models import Prefetch
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views import View

from storage.models import Dataset, UploadLink
from storage.services import links
from storage.services.errors import StorageError

SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
SIZE_PATTERN = re.compile(r"^\s*([0-9]+(?:[.,][0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """'20 GB', '1.5 TiB', '500000' → bytes; ValueError with a message people understand."""
    match = SIZE_PATTERN.match(text or "")
    unit = match.group(2).lower() if match else ""
    if not match or not match.group(1).isascii() or unit not in SIZE_UNITS:
        raise ValueError("Write a size such as 500 MB, 20 GB or 1.5 TB.")
    try:
        value = Decimal(match.group(1).replace(",", ".")) * SIZE_UNITS[unit]
    except InvalidOperation:
        raise ValueError("Write a size such as 500 MB, 20 GB or 1.5 TB.") from None
    if value < 1:
        raise ValueError("The size limit is at least 1 byte.")
    return int(value)


class LinkForm(forms.Form):
    label = forms.CharField(
        max_length=links.LABEL_MAX,
        help_text="So you recognise what arrives through it, e.g. “Sequencing facility, run 42”.",
    )
    expires_on = forms.DateField(
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=f"The link stops working at the end of this day; at most {settings.PORTAL_TOKEN_MAX_DAYS} "
        "days from today.",
    )
    max_size = forms.CharField(
        required=False,
        label="Size limit",
        max_length=40,
        help_text="Total of all files, e.g. 50 GB. Empty: no limit.",
    )
    max_files = forms.IntegerField(
        required=False,
        min_value=1,
        label="File limit",
        help_text="How many files may be sent. Empty: no limit.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["expires_on"].initial = timezone.localdate() + dt.timedelta(days=14)

    def clean_max_size(self) -> int | None:
        text = self.cleaned_data.get("max_size", "").strip()
        if not text:
            return None
        try:
            return parse_size(text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def expires_at(self) -> dt.datetime:
        day = self.cleaned_data["expires_on"]
        return timezone.make_aware(dt.datetime.combine(day, dt.time(23, 59, 59)))


class LinkListView(LoginRequiredMixin, View):
    """Your upload links: create one (its address shown once), copy, revoke, see what arrived."""

    template_name = "storage/link_list.html"

    def _render(self, request, form, *, new_url: str | None = None, status: int = 200):
        own = (
            UploadLink.objects.for_user(request.user, "view")
            .filter(owner=request.user)
            .prefetch_related(
                Prefetch(
                    "datasets", queryset=Dataset.objects.order_by("-created_at", "-id"), to_attr="arrived"
                )
            )
        )
        rows = [{"link": link, "state": links.link_state(link)} for link in own]
        return render(
            request,
            self.template_name,
            {"form": form, "rows": rows, "new_url": new_url},
            status=status,
        )

    def get(self, request):
        return self._render(request, LinkForm())

    def post(self, request):
        form = LinkForm(request.POST)
        if not form.is_valid():
            return self._render(request, form, status=400)
        try:
            link, token = links.create_link(
                request.user,
                label=form.cleaned_data["label"],
                expires_at=form.expires_at(),
                max_bytes=form.cleaned_data["max_size"],
                max_files=form.cleaned_data["max_files"],
                request=request,
            )
        except StorageError as exc:
            form.add_error(None, exc.message)
            return self._render(request, form, status=400)
        messages.success(request, f"Upload link “{link.label}” created. Copy it now: it is shown only once.")
        url = request.build_absolute_uri(reverse("storage-links:link-upload", args=[token]))
        return self._render(request, LinkForm(), new_url=url)


class LinkRevokeView(LoginRequiredMixin, View):
    def post(self, request, pk: int):
        link = UploadLink.objects.for_user(request.user, "change").filter(pk=pk).first()
        if link is None:
            raise Http404("No such upload link.")
        try:
            links.revoke_link(link, actor=request.user, request=request)
            messages.success(request, f"Upload link “{link.label}” revoked: it no longer works.")
        except StorageError as exc:
            messages.error(request, exc.message)
        return HttpResponseRedirect(reverse("storage-links:link-list"))


class LinkUploadPageView(View):
    """The page a link opens: no account, no key. Unknown links are 404, expired or revoked 403."""

    template_name = "storage/link_upload.html"

    def get(self, request, token: str):
        try:
            link = links.authenticate_link(token, request=request, operation="page")
        except links.LinkRefusedError as exc:
            status = 404 if exc.code == "link_unknown" else exc.status
            response = render(
                request,
                "storage/link_refused.html",
                {"message": exc.message, "code": exc.code},
                status=status,
            )
            return self._private(response)
        links.record_use(link, "page", request=request)
        left = links.remaining(link)
        response = render(
            request,
            self.template_name,
            {
                "link": link,
                "token": token,
                "owner_name": link.owner.get_full_name() or link.owner.get_username(),
                "remaining_bytes": left["bytes"],
                "remaining_files": left["files"],
                "chunk_size": settings.STORAGE_CHUNK_SIZE,
            },
        )
        return self._private(response)

    @staticmethod
    def _private(response):
        # The address holds the secret: never send it on as a referrer, never keep the page.
        response["Referrer-Policy"] = "no-referrer"
        response["Cache-Control"] = "no-store"
        response["X-Robots-Tag"] = "noindex, nofollow"
        return response
