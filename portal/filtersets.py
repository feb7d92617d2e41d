"""FilterSets of the core models, shared by the pages and the API."""

import datetime as dt

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField

from portal.models import ApiToken, AuditEvent, Job, JobState


def as_utc(moment: dt.datetime) -> dt.datetime:
    """An aware moment in UTC, as the database compares it (PostgreSQL takes UTC offsets only up
    to 15:59, ISO 8601 up to 23:59); ValueError where it falls outside the years 1 to 9999 in UTC
    (0001-01-01T00:00+05:00)."""
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError(f"{moment.isoformat()} lies outside the years 1 to 9999 in UTC.") from None


class UtcIsoDateTimeField(IsoDateTimeField):
    def to_python(self, value):
        moment = super().to_python(value)
        if moment is None or moment.tzinfo is None:
            return moment
        try:
            return as_utc(moment)
        except ValueError as exc:
            raise forms.ValidationError(str(exc), code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 moment, with any UTC offset ISO 8601 allows, compared in UTC."""

    field_class = UtcIsoDateTimeField


class JobFilterSet(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=JobState.choices)
    kind = django_filters.CharFilter()
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Job
        fields = ["state", "kind", "created_by"]


class AuditEventFilterSet(django_filters.FilterSet):
    action = django_filters.CharFilter()
    action_prefix = django_filters.CharFilter(field_name="action", lookup_expr="startswith")
    since = UtcIsoDateTimeFilter(field_name="timestamp", lookup_expr="gte")
    until = UtcIsoDateTimeFilter(field_name="timestamp", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["action", "actor", "object_type", "object_id"]


class ApiTokenFilterSet(django_filters.FilterSet):
    active = django_filters.BooleanFilter(field_name="revoked_at", lookup_expr="isnull")

    class Meta:
        model = ApiToken
        fields = ["active"]
