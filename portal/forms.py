"""Forms of the core pages."""

import datetime as dt

from django import forms
from django.conf import settings
from django.utils import timezone


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="So you recognise it later, e.g. “laptop upload script”."
    )
    scopes = forms.MultipleChoiceField(
        choices=[], widget=forms.CheckboxSelectMultiple,
        help_text="What the token may do. Choose the fewest that work.",
    )
    expires_on = forms.DateField(
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=f"At most {settings.PORTAL_TOKEN_MAX_DAYS} days from today.",
    )

    def __init__(self, *args, allowed_scopes: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["scopes"].choices = [
            (name, f"{name} – {settings.PORTAL_TOKEN_SCOPES[name]}") for name in allowed_scopes
        ]
        self.fields["scopes"].initial = ["read"]
        self.fields["expires_on"].initial = (timezone.localdate() + dt.timedelta(days=90))

    def expires_at(self) -> dt.datetime:
        day = self.cleaned_data["expires_on"]
        return timezone.make_aware(dt.datetime.combine(day, dt.time(23, 59, 59)))
