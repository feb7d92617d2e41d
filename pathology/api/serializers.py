"""Serializers of the pathology API (fields listed explicitly)."""

from __future__ import annotations

from rest_framework import serializers

from metadata.models import Entity, Project
from pathology.ai import ARCHITECTURES
from pathology.ai.train_job import DEFAULTS as TRAINING
from pathology.ai.train_job import FROM_BASE
from pathology.models import Inference, ModelVersion, Pyramid, Slide


class PyramidSerializer(serializers.ModelSerializer):
    class Meta:
        model = Pyramid
        fields = [
            "width",
            "height",
            "levels",
            "tile_size",
            "tile_format",
            "mpp_x",
            "mpp_y",
            "objective_power",
            "vendor",
            "reader",
            "filters",
            "tissue_tiles",
            "background_tiles",
            "removed_island_tiles",
            "images",
            "file_size",
            "seconds",
            "properties",
        ]
        read_only_fields = fields


class SlideSerializer(serializers.ModelSerializer):
    project = serializers.PrimaryKeyRelatedField(queryset=Project.objects.all())
    sample = serializers.PrimaryKeyRelatedField(
        queryset=Entity.objects.all(), required=False, allow_null=True
    )
    pyramid = PyramidSerializer(read_only=True)
    name = serializers.CharField(
        max_length=255, required=False, allow_blank=True, help_text="Default: the file name."
    )
    file = serializers.FileField(
        write_only=True,
        required=False,
        help_text="The scanner file (multipart), for files up to a few hundred MB.",
    )
    upload = serializers.IntegerField(
        write_only=True,
        required=False,
        help_text='Or: the id of your finished chunked upload (POST /api/v1/uploads/ with purpose "slide").',
    )
    dataset = serializers.CharField(
        write_only=True,
        required=False,
        max_length=80,
        help_text="Or: the mnemonic of an encrypted dataset you can read; send its data key in `key`.",
    )
    key = serializers.CharField(
        write_only=True,
        required=False,
        max_length=100,
        help_text="The dataset's data key (base64), with `dataset`.",
    )
    options = serializers.JSONField(
        required=False, help_text='Filter settings, e.g. {"max_white_fraction": 0.7}.'
    )
    dzi = serializers.SerializerMethodField()
    thumbnail = serializers.SerializerMethodField()

    class Meta:
        model = Slide
        fields = [
            "id",
            "project",
            "name",
            "file_name",
            "size",
            "sha256",
            "state",
            "message",
            "options",
            "sample",
            "duplicate_of",
            "ingress",
            "created_by",
            "created_at",
            "updated_at",
            "pyramid",
            "dzi",
            "thumbnail",
            "file",
            "upload",
            "dataset",
            "key",
        ]
        read_only_fields = [
            "file_name",
            "size",
            "sha256",
            "state",
            "message",
            "duplicate_of",
            "ingress",
            "created_by",
            "created_at",
            "updated_at",
        ]

    def get_dzi(self, slide) -> str | None:
        return f"/api/v1/slides/{slide.pk}/deepzoom.dzi" if slide.pyramid_id else None

    def get_thumbnail(self, slide) -> str | None:
        return f"/api/v1/slides/{slide.pk}/images/thumbnail" if slide.pyramid_id else None

    def validate(self, attrs):
        if self.instance is None and sum(name in attrs for name in ("file", "upload", "dataset")) != 1:
            raise serializers.ValidationError(
                {"file": ["Send one of: the file, the id of a finished upload, or a dataset with its key."]}
            )
        if "dataset" in attrs and not attrs.get("key"):
            raise serializers.ValidationError({"key": ["The dataset's data key is needed to import it."]})
        return attrs

    def validate_sample(self, sample):
        project = self.initial_data.get("project") if self.instance is None else self.instance.project_id
        if sample is not None and str(sample.project_id) != str(project):
            raise serializers.ValidationError("The sample belongs to another project.")
        return sample


class SlideUpdateSerializer(SlideSerializer):
    file = None
    upload = None
    dataset = None
    key = None
    project = serializers.PrimaryKeyRelatedField(read_only=True)
    name = serializers.CharField(max_length=255)
    # Declared on the parent, so `read_only_fields` does not reach it: new settings go through
    # `convert/`, which makes the pyramid again.
    options = serializers.JSONField(read_only=True)

    class Meta(SlideSerializer.Meta):
        fields = [f for f in SlideSerializer.Meta.fields if f not in ("file", "upload", "dataset", "key")]
        read_only_fields = [*SlideSerializer.Meta.read_only_fields, "options"]


class ConvertSerializer(serializers.Serializer):
    options = serializers.JSONField(required=False, help_text="New filter settings (omit: keep the slide's).")


class AnnotationInputSerializer(serializers.Serializer):
    """A GeoJSON Feature or FeatureCollection (import); geometry in full-resolution pixels."""

    type = serializers.ChoiceField(choices=["Feature", "FeatureCollection"])
    features = serializers.ListField(child=serializers.DictField(), required=False)
    geometry = serializers.DictField(required=False)
    properties = serializers.DictField(required=False, allow_null=True)


class JSONText(serializers.JSONField):
    """JSON sent as text in a multipart form; given back as JSON."""

    def __init__(self, **kwargs):
        super().__init__(binary=True, **kwargs)

    def to_representation(self, value):
        return value


class ModelVersionSerializer(serializers.ModelSerializer):
    """A registered model version (read), or a TorchScript file and its description (create:
    multipart; `classes`, `normalisation`, `stains`, `metrics` and `provenance` as JSON). A
    classifier is described by its `classes`, a backbone (`kind` "backbone": a feature extractor,
    only fine-tuned) by its number of `features`."""

    project = serializers.PrimaryKeyRelatedField(queryset=Project.objects.all())
    file = serializers.FileField(write_only=True, help_text="The TorchScript file (torch.jit.save).")
    classes = JSONText(
        required=False,
        help_text='Labels in output order, e.g. ["tumour", "stroma"] (a classifier; a backbone has none).',
    )
    features = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="A backbone's features per patch (its output is N × features).",
    )
    normalisation = JSONText(
        required=False, help_text='{"mean": [r, g, b], "std": [r, g, b]} of inputs in 0–1.'
    )
    stains = JSONText(required=False, help_text='E.g. ["H&E"].')
    metrics = JSONText(required=False)
    provenance = JSONText(required=False)

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "project",
            "name",
            "version",
            "architecture",
            "kind",
            "description",
            "stains",
            "classes",
            "features",
            "patch_microns",
            "input_size",
            "normalisation",
            "metrics",
            "provenance",
            "sha256",
            "size",
            "created_by",
            "created_at",
            "file",
        ]
        read_only_fields = ["id", "version", "architecture", "sha256", "size", "created_by", "created_at"]
        extra_kwargs = {"name": {"validators": []}}


class InferenceSerializer(serializers.ModelSerializer):
    model_label = serializers.SerializerMethodField(help_text="The model version's name and number.")
    classes = serializers.ListField(
        source="model_version.classes", child=serializers.CharField(), read_only=True
    )

    class Meta:
        model = Inference
        fields = [
            "id",
            "slide",
            "model_version",
            "model_label",
            "classes",
            "job",
            "state",
            "message",
            "mpp",
            "device",
            "patches",
            "tissue_patches",
            "class_counts",
            "mean_probabilities",
            "created_by",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_model_label(self, inference) -> str:
        return str(inference.model_version)


class InferenceStartSerializer(serializers.Serializer):
    model_version = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all())
    slides = serializers.PrimaryKeyRelatedField(
        queryset=Slide.objects.all(), many=True, allow_empty=False, required=False
    )
    all_slides = serializers.BooleanField(
        default=False, help_text="Instead of `slides`: every converted slide of the model's project."
    )
    mpp = serializers.FloatField(
        required=False, help_text="Microns per pixel, for slides that do not say (or to override them)."
    )

    def validate(self, attrs):
        if bool(attrs.get("slides")) == attrs["all_slides"]:
            raise serializers.ValidationError(
                "Give either `slides` (a list of slide ids) or `all_slides`: true."
            )
        return attrs


class TrainingSerializer(serializers.Serializer):
    """A training request; what it leaves out takes `train_job.DEFAULTS` (shown as defaults)."""

    project = serializers.PrimaryKeyRelatedField(queryset=Project.objects.all())
    name = serializers.CharField(max_length=100)
    architecture = serializers.ChoiceField(
        choices=ARCHITECTURES,
        default=TRAINING["architecture"],
        help_text="A built-in network trained from scratch (not with `base_model`).",
    )
    base_model = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="Or: the id of a model version of the project to fine-tune (a classifier or a backbone); "
        "`patch_microns`, `input_size` and the normalisation are then the base's unless given.",
    )
    freeze_backbone = serializers.BooleanField(
        default=TRAINING["freeze_backbone"],
        help_text="With `base_model`: train only a new head over it, the base's weights kept.",
    )
    label = serializers.CharField(
        max_length=100,
        default=TRAINING["label"],
        help_text="The metadata property whose values are the classes.",
    )
    slides = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        help_text="Default: every labelled slide.",
    )
    patch_microns = serializers.FloatField(default=TRAINING["patch_microns"])
    input_size = serializers.IntegerField(default=TRAINING["input_size"])
    epochs = serializers.IntegerField(default=TRAINING["epochs"])
    batch_size = serializers.IntegerField(default=TRAINING["batch_size"])
    learning_rate = serializers.FloatField(default=TRAINING["learning_rate"])
    samples_per_epoch = serializers.IntegerField(default=TRAINING["samples_per_epoch"])
    validation = serializers.FloatField(
        default=TRAINING["validation"], help_text="Share of patients held out for validation."
    )
    test = serializers.FloatField(
        default=TRAINING["test"], help_text="Share of patients held out for the test."
    )
    seed = serializers.IntegerField(default=TRAINING["seed"])
    stains = serializers.ListField(child=serializers.CharField(max_length=50), required=False)

    def validate(self, attrs):
        if attrs.get("base_model") is not None:  # the base's values, unless the request gives others
            for key in FROM_BASE:
                if key not in self.initial_data:
                    attrs.pop(key, None)
        return attrs
