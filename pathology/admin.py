"""Admin site registrations of the pathology models.

Slides can be renamed and linked here; their files and pyramids change only through the
conversion job (the "Convert again" action starts it).
"""

from django.contrib import admin, messages

from pathology.models import Annotation, Inference, IngressSighting, ModelVersion, Pyramid, Slide
from pathology.services import slides as slide_service


@admin.register(Slide)
class SlideAdmin(admin.ModelAdmin):
    list_display = ("name", "project", "state", "file_name", "size", "sample", "created_by", "created_at")
    list_filter = ("state", "ingress", "project", "created_at")
    search_fields = ("name", "file_name", "sha256")
    readonly_fields = (
        "file_name",
        "source_path",
        "size",
        "sha256",
        "state",
        "message",
        "progress",
        "pyramid",
        "duplicate_of",
        "ingress",
        "created_by",
        "created_at",
        "updated_at",
    )
    raw_id_fields = ("sample",)
    actions = ["convert_again"]

    @admin.action(description="Convert the selected slides again")
    def convert_again(self, request, queryset):
        started = 0
        for slide in queryset:
            try:
                slide_service.reconvert(slide, request.user)
                started += 1
            except slide_service.SlideError as exc:
                self.message_user(request, f"{slide}: {exc}", messages.WARNING)
        self.message_user(request, f"{started} conversion(s) started.")


@admin.register(Pyramid)
class PyramidAdmin(admin.ModelAdmin):
    list_display = (
        "sha256",
        "width",
        "height",
        "levels",
        "tile_size",
        "vendor",
        "tissue_tiles",
        "created_at",
    )
    list_filter = ("vendor", "tile_size", "created_at")
    search_fields = ("sha256", "path", "vendor")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ("slide", "kind", "label", "created_by", "created_at")
    list_filter = ("kind", "created_at")
    search_fields = ("label", "slide__name")
    raw_id_fields = ("slide",)


@admin.register(IngressSighting)
class IngressSightingAdmin(admin.ModelAdmin):
    list_display = ("path", "size", "seen_at", "problem")
    list_filter = ("seen_at",)
    search_fields = ("path", "problem")


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """Model versions are immutable: shown, not changed (a change is a new version)."""

    list_display = (
        "name",
        "version",
        "project",
        "kind",
        "architecture",
        "input_size",
        "patch_microns",
        "created_at",
    )
    list_filter = ("kind", "architecture", "created_at")
    search_fields = ("name", "description", "sha256")

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(Inference)
class InferenceAdmin(admin.ModelAdmin):
    """Results of applying a model: made by the inference job, not edited here."""

    list_display = ("model_version", "slide", "state", "device", "tissue_patches", "created_at")
    list_filter = ("state", "device", "created_at")
    search_fields = ("slide__name", "model_version__name", "message")
    raw_id_fields = ("slide", "model_version", "job")

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False
