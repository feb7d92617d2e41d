"""Page: the user's keys – generate one in the browser, keep, download, print, scan, register;
register a key made elsewhere; revoke; portal admins activate new keys.

The private key never reaches this view: `static/storage/keys.js` makes and keeps it in the
browser and registers only the public half (through the API, as a script would).
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.views import View

from storage.models import KeyState, UserKey
from storage.services import keys as key_service
from storage.services.errors import StorageError


class RegisterKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        label="Name of the key",
        help_text="Where the private key is kept, e.g. “office laptop” or “cluster account”.",
    )
    public_key = forms.CharField(
        label="Public key",
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text="PEM (“-----BEGIN PUBLIC KEY-----”), an “ssh-rsa …” line or a JWK; RSA with 4096 bits. "
        "Never paste the private key here.",
    )

    def clean_public_key(self):
        text = self.cleaned_data["public_key"]
        if "PRIVATE KEY" in text or '"d"' in text:
            raise forms.ValidationError(
                "This is a private key. Keep it secret; paste only the public key (e.g. “key.pub”)."
            )
        return text


class KeysView(LoginRequiredMixin, View):
    template_name = "storage/keys.html"

    def context(self, form: RegisterKeyForm | None = None) -> dict:
        user = self.request.user
        mine = UserKey.objects.for_user(user).filter(user=user).order_by("-created_at", "-id")
        pending = (
            UserKey.objects.for_user(user)
            .filter(state=KeyState.PENDING)
            .exclude(user=user)
            .select_related("user")
            .order_by("created_at")
            if user.is_staff
            else UserKey.objects.none()
        )
        return {
            "keys": mine,
            "pending": pending,
            "form": form or RegisterKeyForm(),
            "needs_activation": settings.STORAGE_KEYS_NEED_ACTIVATION and not user.is_staff,
            "config": {
                "user": user.get_username(),
                "registered": [k.fingerprint for k in mine if k.state != KeyState.REVOKED],
            },
        }

    def get(self, request):
        return render(request, self.template_name, self.context())

    def post(self, request):
        verb = request.POST.get("action", "")
        if verb == "register":
            form = RegisterKeyForm(request.POST)
            if not form.is_valid():
                return render(request, self.template_name, self.context(form), status=400)
            try:
                key = key_service.register_user_key(
                    request.user, form.cleaned_data["name"], form.cleaned_data["public_key"], request=request
                )
            except StorageError as exc:
                form.add_error("public_key", exc.message)
                return render(request, self.template_name, self.context(form), status=400)
            messages.success(request, registered_message(key))
            return HttpResponseRedirect(reverse("storage:key-list"))
        key = (
            UserKey.objects.for_user(request.user, "change").filter(pk=_int(request.POST.get("key"))).first()
        )
        if key is None:
            raise Http404("No such key.")
        try:
            if verb == "revoke":
                removed = key_service.revoke_user_key(key, actor=request.user, request=request)
                messages.success(
                    request,
                    f"Key “{key.name}” is revoked; it opens nothing any more ({removed} dataset key"
                    f"{'s' if removed != 1 else ''} removed).",
                )
            elif verb == "activate":
                if not request.user.is_staff:
                    raise PermissionDenied("Only portal administrators activate keys.")
                key_service.activate_user_key(key, actor=request.user, request=request)
                messages.success(request, f"Key “{key.name}” of {key.user.username} is active.")
            else:
                messages.error(request, "Unknown action.")
        except StorageError as exc:
            messages.error(request, exc.message)
        return HttpResponseRedirect(reverse("storage:key-list"))


def registered_message(key: UserKey) -> str:
    if key.state == KeyState.ACTIVE:
        return f"Key “{key.name}” is registered and active: you can upload and receive data."
    return (
        f"Key “{key.name}” is registered. A portal administrator must activate it before you can upload "
        "or receive data."
    )


def _int(value) -> int | None:
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() else None


urlpatterns = [path("keys/", KeysView.as_view(), name="key-list")]
