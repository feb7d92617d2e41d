"""Serializers of the imaging API (fields listed explicitly)."""

from __future__ import annotations

from rest_framework import serializers

from imaging.models import IngestRun, Instance, Patient, Series, Study
from metadata.models import Project


class PatientSerializer(serializers.ModelSerializer):
    class Meta:
        model = Patient
        fields = ["id", "patient_id", "name", "birth_date", "sex", "sample"]
        read_only_fields = fields


class InstanceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Instance
        fields = [
            "id",
            "sop_instance_uid",
            "sop_class_uid",
            "number",
            "transfer_syntax",
            "rows",
            "columns",
            "frames",
            "size",
            "sha256",
            "conflict",
            "created_at",
        ]
        read_only_fields = fields


class SeriesSerializer(serializers.ModelSerializer):
    class Meta:
        model = Series
        fields = [
            "id",
            "series_uid",
            "modality",
            "number",
            "description",
            "body_part",
            "instance_count",
            "quality",
        ]
        read_only_fields = fields


class SeriesDetailSerializer(SeriesSerializer):
    instances = InstanceSerializer(many=True, read_only=True)

    class Meta(SeriesSerializer.Meta):
        fields = [*SeriesSerializer.Meta.fields, "study", "instances"]
        read_only_fields = fields


class StudySerializer(serializers.ModelSerializer):
    patient = PatientSerializer(read_only=True)

    class Meta:
        model = Study
        fields = [
            "id",
            "project",
            "study_uid",
            "study_date",
            "study_time",
            "description",
            "accession_number",
            "study_id",
            "referring_physician",
            "modalities",
            "series_count",
            "instance_count",
            "patient",
            "created_at",
        ]
        read_only_fields = fields


class StudyDetailSerializer(StudySerializer):
    series = SeriesSerializer(many=True, read_only=True)

    class Meta(StudySerializer.Meta):
        fields = [*StudySerializer.Meta.fields, "series"]
        read_only_fields = fields


class IngestRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = IngestRun
        fields = [
            "id",
            "project",
            "source",
            "label",
            "state",
            "accepted",
            "duplicates",
            "conflicts",
            "rejected",
            "message",
            "created_by",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields


class IngestRunDetailSerializer(IngestRunSerializer):
    class Meta(IngestRunSerializer.Meta):
        fields = [*IngestRunSerializer.Meta.fields, "report"]
        read_only_fields = fields


class IngestStartSerializer(serializers.Serializer):
    project = serializers.PrimaryKeyRelatedField(queryset=Project.objects.all())
    uploads = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        min_length=1,
        max_length=1000,
        help_text='Ids of your finished uploads (POST /api/v1/uploads/ with purpose "dicom"): files or ZIPs.',
    )
    label = serializers.CharField(required=False, allow_blank=True, max_length=255)


class DeidSettingsSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    options = serializers.ListField(child=serializers.CharField(max_length=60), required=False, max_length=10)

    def validate_options(self, value):
        from imaging.services.deid import OPTIONS

        unknown = sorted(set(value) - set(OPTIONS))
        if unknown:
            raise serializers.ValidationError(
                f"Unknown options: {', '.join(unknown)}. Known: {', '.join(OPTIONS)}."
            )
        return sorted(set(value))


class PseudonymSerializer(serializers.Serializer):
    kind = serializers.CharField()
    pseudonym = serializers.CharField()
    original = serializers.CharField()
    created_at = serializers.DateTimeField()
