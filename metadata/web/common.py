"""Shared pieces of the project pages: access helpers, value display and the forms.

Views stay thin: changes go through `metadata.services` (the API uses the same services), so
everything a page does can be done through `/api/v1/` too. Access follows the project role:
non-members see only a project's name and description and may ask to join; readers see;
project admins manage members and columns; portal admins (staff) edit the catalogue.
"""

from __future__ import annotations

import re

from django import forms
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse

from metadata.models import (
    EntityKind,
    JoinRequest,
    JoinRequestState,
    Membership,
    Project,
    ProjectProperty,
    ProjectRole,
    Property,
    PropertyType,
    Template,
)
from metadata.models.properties import LINK_TYPES
from metadata.querysets import ROLE_ORDER, project_role

MAX_LABELS = 1000
LABELS_PER_PAGE = {"3x8": 24, "2x5": 10}  # A4 label sheets: 70 × 37 mm and 105 × 57 mm labels
NUMERIC_TYPES = (PropertyType.INTEGER, PropertyType.DECIMAL)



# --- helpers ------------------------------------------------------------------------------------


def optional_url(name: str, *args) -> str | None:
    """The URL of a page that may not exist yet (built by another module), or None."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def get_project(pk: int) -> Project:
    project = Project.objects.select_related("owner", "template").filter(pk=pk).first()
    if project is None:
        raise Http404("No such project.")
    return project


def pending_request(project: Project, user) -> JoinRequest | None:
    return JoinRequest.objects.filter(project=project, user=user, state=JoinRequestState.PENDING).first()


def public_page(request, project: Project, *, status: int = 200, form: JoinForm | None = None):
    """What a non-member may see of a project: name, description, and the way to ask to join."""
    return render(
        request,
        "metadata/project_public.html",
        {
            "project": project,
            "pending": pending_request(project, request.user),
            "form": form or JoinForm(),
            "denied": status == 403,
        },
        status=status,
    )


def display_value(prop: Property, value) -> str:
    """A stored value as people read it: yes/no, option descriptions, units, linked ids."""
    if value is None:
        return ""
    if prop.type == PropertyType.BOOLEAN and isinstance(value, bool):
        return "yes" if value else "no"
    if prop.type in LINK_TYPES and isinstance(value, int) and not isinstance(value, bool):
        return f"{PropertyType(prop.type).label.removeprefix('Link to a ')} #{value}"
    text = str(value)
    if prop.unit and prop.type in NUMERIC_TYPES and isinstance(value, (int, float)):
        return f"{text} {prop.unit}"
    return text


def plain_number(number) -> str:
    """130, 0.5 – not 1.3E+2 or 0.5000000000."""
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def range_text(prop: Property) -> str:
    low, high = prop.min_value, prop.max_value
    if low is not None and high is not None:
        return f"from {plain_number(low)} to {plain_number(high)}"
    if low is not None:
        return f"at least {plain_number(low)}"
    if high is not None:
        return f"at most {plain_number(high)}"
    return ""


def option_description(prop: Property, value) -> str:
    for option in prop.options or []:
        if str(option.get("value")) == str(value):
            return option.get("description") or ""
    return ""


class ProjectPageMixin(LoginRequiredMixin):
    """Resolve `project_pk` and the user's role; non-members get the project's public page."""

    required_role = "reader"
    #: Status of the public page shown to non-members (the overview is public: 200).
    stranger_status = 403

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.project = get_project(kwargs["project_pk"])
        self.role = project_role(request.user, self.project)
        if self.role is None:
            return public_page(request, self.project, status=self.stranger_status)
        if ROLE_ORDER[self.role] < ROLE_ORDER[self.required_role]:
            raise PermissionDenied(f"Only project {self.required_role}s can open this page.")
        return super().dispatch(request, *args, **kwargs)

    def base_context(self) -> dict:
        return {
            "project": self.project,
            "role": self.role,
            "role_label": self._role_label(),
            "is_project_admin": self.role == ProjectRole.ADMIN,
        }

    def _role_label(self) -> str:
        user = self.request.user
        if user.is_staff and not Membership.objects.filter(project=self.project, user=user).exists():
            return "portal admin"
        return self.role


# --- forms --------------------------------------------------------------------------------------


class ProjectForm(forms.Form):
    name = forms.CharField(
        max_length=200, help_text="A short name others can find, e.g. “Lung adenocarcinoma cohort 2026”."
    )
    description = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="What the project is about. Every signed-in user can read it, so leave out patient data.",
    )
    template = forms.ModelChoiceField(
        queryset=Template.objects.all(),
        required=False,
        help_text="The kinds of rows and the columns the project starts with; you can adapt them later.",
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if Project.objects.filter(name__iexact=name).exists():
            raise forms.ValidationError("A project with this name exists already.")
        return name


class ProjectDetailsForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 4})}
        help_texts = {"description": "Every signed-in user can read the name and description."}

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if Project.objects.filter(name__iexact=name).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError("A project with this name exists already.")
        return name


class JoinForm(forms.Form):
    message = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Message to the project's admins (optional)",
        help_text="Say who you are and why you would like to join.",
    )


class PropertyForm(forms.ModelForm):
    """A catalogue property; options and examples are edited as lines of text."""

    options_text = forms.CharField(
        label="Suggested options",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="One option a line: the value, then optionally “|” and a description, "
        "e.g. “FFPE | formalin-fixed, paraffin-embedded”.",
    )
    examples_text = forms.CharField(
        label="Example values",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One example a line; shown to people filling in the sheet.",
    )

    class Meta:
        model = Property
        fields = [
            "key",
            "label",
            "description",
            "type",
            "unit",
            "options_only",
            "regex",
            "min_value",
            "max_value",
        ]
        labels = {
            "options_only": "Only the options are valid",
            "regex": "Pattern (regular expression)",
            "min_value": "Smallest valid value",
            "max_value": "Largest valid value",
        }
        help_texts = {
            "key": "The name scripts and imports use: lower-case letters, digits and underscores. "
            "It cannot be changed later.",
            "label": "The column heading people see, e.g. “Age at sampling”.",
            "description": "What the value means and how to record it.",
            "unit": "For numbers, e.g. years, mm, bp.",
            "options_only": "Values outside the options are flagged as invalid.",
            "regex": "Text values must match it completely, e.g. [A-Z]{2}-[0-9]+.",
            "min_value": "For whole numbers and decimals.",
            "max_value": "For whole numbers and decimals.",
        }
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["key"].disabled = True
            self.fields["options_text"].initial = "\n".join(
                f"{o.get('value')} | {o['description']}" if o.get("description") else str(o.get("value"))
                for o in self.instance.options or []
            )
            self.fields["examples_text"].initial = "\n".join(str(e) for e in self.instance.examples or [])

    def clean_regex(self) -> str:
        regex = self.cleaned_data.get("regex", "")
        if regex:
            try:
                re.compile(regex)
            except re.error as exc:
                raise forms.ValidationError(f"Not a valid pattern: {exc}.") from exc
        return regex

    def clean_options_text(self) -> list[dict]:
        options, seen = [], set()
        for number, line in enumerate(self.cleaned_data.get("options_text", "").splitlines(), start=1):
            if not line.strip():
                continue
            value, _, description = line.partition("|")
            value, description = value.strip(), description.strip()
            if not value:
                raise forms.ValidationError(f"Line {number} has no value before the “|”.")
            if value in seen:
                raise forms.ValidationError(f"The option “{value}” is listed twice.")
            seen.add(value)
            options.append({"value": value, "description": description} if description else {"value": value})
        return options

    def clean_examples_text(self) -> list[str]:
        return [
            line.strip() for line in self.cleaned_data.get("examples_text", "").splitlines() if line.strip()
        ]

    def clean(self):
        data = super().clean()
        kind, low, high = data.get("type"), data.get("min_value"), data.get("max_value")
        options = data.get("options_text") or []
        if (low is not None or high is not None) and kind not in NUMERIC_TYPES:
            self.add_error(
                "min_value", "Smallest and largest values apply to whole numbers and decimals only."
            )
        if low is not None and high is not None and low > high:
            self.add_error("max_value", "The largest value is smaller than the smallest.")
        if data.get("options_only") and not options and "options_text" not in self.errors:
            self.add_error("options_only", "Give the options first, or untick this box.")
        if kind == PropertyType.CHOICE and not options and "options_text" not in self.errors:
            self.add_error("options_text", "A choice needs at least one option.")
        return data

    def save(self, commit: bool = True) -> Property:
        self.instance.options = self.cleaned_data["options_text"]
        self.instance.examples = self.cleaned_data["examples_text"]
        return super().save(commit)


class AddColumnForm(forms.Form):
    property = forms.ModelChoiceField(
        queryset=Property.objects.all(), label="Property", empty_label="Choose a property"
    )
    entity_kind = forms.ModelChoiceField(
        queryset=EntityKind.objects.none(), label="Kind of row", empty_label="Choose a kind"
    )
    required = forms.BooleanField(required=False, label="Required", help_text="Empty cells are flagged.")

    def __init__(self, *args, project: Project, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["entity_kind"].queryset = project.entity_kinds.all()
        self.fields["property"].label_from_instance = lambda p: f"{p.label} ({p.key}, {p.get_type_display()})"


class LabelForm(forms.Form):
    LAYOUTS = [("3x8", "Small: 3 × 8 labels a page (24)"), ("2x5", "Large: 2 × 5 labels a page (10)")]

    kind = forms.ChoiceField(label="Kind of row", required=False)
    mnemonics = forms.CharField(
        label="Only these ids (optional)",
        required=False,
        max_length=100_000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Separate ids by spaces, commas or new lines, e.g. S-0001 S-0002. Leave empty for all.",
    )
    field_1 = forms.ChoiceField(label="First value on the label", required=False)
    field_2 = forms.ChoiceField(label="Second value on the label", required=False)
    layout = forms.ChoiceField(choices=LAYOUTS, initial="3x8", required=False, label="Label size")

    def __init__(self, *args, project: Project, columns: list[ProjectProperty], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [("", "All kinds")] + [
            (k.key, k.label) for k in project.entity_kinds.all()
        ]
        props = {c.property.key: c.property.label for c in columns}
        choices = [("", "None")] + sorted(((k, f"{v} ({k})") for k, v in props.items()), key=lambda c: c[1])
        self.fields["field_1"].choices = choices
        self.fields["field_2"].choices = choices

    def mnemonic_list(self) -> list[str]:
        text = self.cleaned_data.get("mnemonics") or ""
        return list(dict.fromkeys(t for t in re.split(r"[\s,;]+", text) if t))
