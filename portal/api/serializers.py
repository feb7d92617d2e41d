"""Serializers of the core API (fields listed explicitly)."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from portal.api.base import StrictModelSerializer, StrictSerializer
from portal.models import ApiToken, AuditEvent, Job, User
from portal.services.jobs import JOB_KINDS, may_start


class UserSerializer(StrictModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "first_name", "last_name", "email", "is_staff", "date_joined"]
        read_only_fields = ["id", "username", "is_staff", "date_joined"]


class JobSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:job-detail")
    label = serializers.CharField(read_only=True)
    target = serializers.SerializerMethodField()
    duration = serializers.FloatField(source="duration_seconds", read_only=True, allow_null=True)
    traceback = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)
    metrics = serializers.ListField(
        child=serializers.DictField(), read_only=True,
        help_text="Points the job reported, oldest first, e.g. {epoch, loss, accuracy, val_loss, "
        "val_accuracy} per epoch of a training; accuracies are fractions 0..1.",
    )

    class Meta:
        model = Job
        fields = [
            "id", "url", "kind", "label", "state", "progress", "message", "params", "log", "error",
            "traceback", "result", "result_url", "target", "created_by", "retry_of",
            "cancel_requested", "attempts", "sequence", "created_at", "started_at",
            "finished_at", "duration", "metrics",
        ]
        read_only_fields = fields

    def to_representation(self, job: Job) -> dict:
        data = super().to_representation(job)
        if isinstance(data.get("params"), dict):  # secrets handed to workers stay unshown
            shown = {n: "(sealed)" if n.startswith("sealed_") else v for n, v in data["params"].items()}
            data["params"] = shown
        return data

    @extend_schema_field({"type": "object", "nullable": True, "properties": {
        "type": {"type": "string"}, "id": {"type": "integer"}}})
    def get_target(self, job: Job) -> dict | None:
        if not job.target_type_id:
            return None
        return {"type": f"{job.target_type.app_label}.{job.target_type.model}", "id": job.target_id}

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_traceback(self, job: Job) -> str | None:
        request = self.context.get("request")
        if request is not None and request.user.is_staff:
            return job.traceback
        return None


class JobStartSerializer(StrictSerializer):
    """Start a job of a kind the user may start, with that kind's parameters."""

    kind = serializers.CharField()
    params = serializers.DictField(required=False, default=dict)

    def validate(self, attrs):
        user = self.context["request"].user
        kind = JOB_KINDS.get(attrs["kind"])
        if not may_start(kind, user):
            raise serializers.ValidationError({"kind": [f"Unknown job kind {attrs['kind']!r}."]})
        if kind.params is None:
            if attrs["params"]:
                raise serializers.ValidationError({"params": ["This job takes no parameters."]})
            return attrs
        params = kind.params(data=attrs["params"])
        if not params.is_valid():
            raise serializers.ValidationError({"params": params.errors})
        unknown = sorted(set(attrs["params"]) - set(params.fields))
        if unknown:
            raise serializers.ValidationError({"params": {name: ["Unknown field."] for name in unknown}})
        attrs["params"] = params.validated_data
        return attrs


class JobKindSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    description = serializers.CharField()
    queue = serializers.CharField()
    staff_only = serializers.BooleanField()


class ApiTokenSerializer(StrictModelSerializer):
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=list(settings.PORTAL_TOKEN_SCOPES)),
        source="scope_list", allow_empty=False,
    )
    expires_at = serializers.DateTimeField(required=False)
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "scopes", "hint", "created_at", "expires_at", "revoked_at",
                  "last_used_at", "is_active"]
        read_only_fields = ["id", "hint", "created_at", "revoked_at", "last_used_at", "is_active"]

    def validate_expires_at(self, value: dt.datetime) -> dt.datetime:
        if value <= timezone.now():
            raise serializers.ValidationError("The expiry must be in the future.")
        return value


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The secret; shown only this once.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = ["id", "timestamp", "actor", "actor_repr", "action", "object_type", "object_id",
                  "object_repr", "ip_address", "details"]
        read_only_fields = fields
