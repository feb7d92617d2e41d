"""Serializers of the metadata API (fields listed explicitly)."""

from __future__ import annotations

from rest_framework import serializers

from metadata.models import (
    Entity,
    EntityKind,
    Event,
    JoinRequest,
    Membership,
    Project,
    ProjectProperty,
    ProjectRole,
    Property,
    Template,
    TemplateProperty,
)
from metadata.services.qr import entity_url
from portal.api.base import StrictModelSerializer, StrictSerializer


class ProjectSerializer(StrictModelSerializer):
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    template = serializers.SlugRelatedField(
        slug_field="key", queryset=Template.objects.all(), required=False, allow_null=True
    )
    role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["id", "name", "description", "owner", "template", "role", "created_at"]
        read_only_fields = ["id", "owner", "role", "created_at"]

    def get_role(self, project) -> str | None:
        """The requesting user's role (looked up once per list, see the viewset's context)."""
        roles = self.context.setdefault("roles", {})
        if project.pk not in roles and "request" in self.context:
            roles[project.pk] = (
                Membership.objects.filter(project=project, user=self.context["request"].user)
                .values_list("role", flat=True)
                .first()
            )
        return roles.get(project.pk)


class ProjectDirectorySerializer(serializers.ModelSerializer):
    """What every signed-in user may know of any project."""

    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Project
        fields = ["id", "name", "description", "owner", "created_at"]


class MembershipSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    user_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = Membership
        fields = ["user_id", "user", "role", "added_at"]


class SetMemberSerializer(StrictSerializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=ProjectRole.choices)


class JoinRequestSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    decided_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = JoinRequest
        fields = ["id", "user", "message", "state", "role", "created_at", "decided_by", "decided_at"]


class JoinSerializer(StrictSerializer):
    message = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class ApplyTemplateSerializer(StrictSerializer):
    template = serializers.SlugRelatedField(slug_field="key", queryset=Template.objects.all())


class ChangeColumnSerializer(StrictSerializer):
    position = serializers.IntegerField(min_value=0, required=False, help_text="0: first column of its kind.")
    required = serializers.BooleanField(required=False)


class DecideSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=ProjectRole.choices, required=False, default=ProjectRole.READER)


class PropertySerializer(StrictModelSerializer):
    class Meta:
        model = Property
        fields = [
            "id",
            "key",
            "label",
            "description",
            "type",
            "unit",
            "options",
            "options_only",
            "regex",
            "min_value",
            "max_value",
            "examples",
        ]

    def validate_options(self, options):
        if not isinstance(options, list) or not all(isinstance(o, dict) and "value" in o for o in options):
            raise serializers.ValidationError('A list of {"value": …, "description": …}.')
        return options

    def validate_regex(self, regex):
        import re

        try:
            re.compile(regex)
        except re.error as exc:
            raise serializers.ValidationError(f"Not a valid pattern: {exc}.") from exc
        return regex

    def validate_examples(self, examples):
        if not isinstance(examples, list):
            raise serializers.ValidationError("A list of example values.")
        return examples


class TemplatePropertySerializer(serializers.ModelSerializer):
    property = serializers.SlugRelatedField(slug_field="key", read_only=True)

    class Meta:
        model = TemplateProperty
        fields = ["property", "entity_kind", "position", "required"]


class TemplateSerializer(serializers.ModelSerializer):
    properties = TemplatePropertySerializer(source="template_properties", many=True, read_only=True)

    class Meta:
        model = Template
        fields = ["id", "key", "name", "description", "entity_kinds", "properties"]


class EntityKindSerializer(serializers.ModelSerializer):
    parent = serializers.SlugRelatedField(slug_field="key", read_only=True)

    class Meta:
        model = EntityKind
        fields = ["id", "key", "label", "prefix", "parent"]


class ColumnSerializer(serializers.ModelSerializer):
    entity_kind = serializers.SlugRelatedField(slug_field="key", read_only=True)
    property = PropertySerializer(read_only=True)

    class Meta:
        model = ProjectProperty
        fields = ["id", "entity_kind", "property", "position", "required"]


class AddColumnSerializer(StrictSerializer):
    property = serializers.SlugRelatedField(slug_field="key", queryset=Property.objects.all())
    entity_kind = serializers.CharField(max_length=63)
    required = serializers.BooleanField(default=False)


class EntitySerializer(serializers.ModelSerializer):
    kind = serializers.SlugRelatedField(slug_field="key", read_only=True)
    parent = serializers.SlugRelatedField(slug_field="mnemonic", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Entity
        fields = ["id", "mnemonic", "kind", "parent", "url", "created_at"]

    def get_url(self, entity) -> str:
        """The deep link: the entity's page, the address its QR code encodes."""
        return entity_url(entity, self.context.get("request"))


class CreateEntitiesSerializer(StrictSerializer):
    kind = serializers.CharField(max_length=63)
    count = serializers.IntegerField(min_value=1, max_value=100_000, default=1)
    parent = serializers.CharField(
        max_length=30,
        required=False,
        allow_null=True,
        default=None,
        help_text="Mnemonic id of the parent row, e.g. P-0001.",
    )


class EventSerializer(serializers.ModelSerializer):
    entity = serializers.SlugRelatedField(slug_field="mnemonic", read_only=True)
    entity_id = serializers.IntegerField(read_only=True)
    property = serializers.SlugRelatedField(slug_field="key", read_only=True)
    author = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Event
        fields = [
            "id",
            "entity_id",
            "entity",
            "property",
            "kind",
            "value",
            "redacted",
            "target",
            "author",
            "timestamp",
            "batch",
            "comment",
        ]


class ChangeSerializer(StrictSerializer):
    entity = serializers.JSONField(help_text="Row id or mnemonic id (e.g. S-0001).")
    property = serializers.CharField(max_length=63)
    value = serializers.JSONField(allow_null=True)

    def validate_entity(self, entity):
        if isinstance(entity, bool) or not isinstance(entity, (int, str)):
            raise serializers.ValidationError("A row id or a mnemonic id.")
        return entity


class AppendEventsSerializer(StrictSerializer):
    changes = ChangeSerializer(many=True, allow_empty=False, max_length=100_000)
    comment = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class RedactSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=500)
