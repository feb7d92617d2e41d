"""Admin site registrations of the storage models.

Keys can be activated and revoked here (through the services, so revocation removes wraps and
every change is audited). Datasets, chunks and wraps are shown read-only: their files and keys
only change through the upload, re-key and recycle-bin services.
"""

from django.contrib import admin, messages

from storage.models import (
    Chunk,
    Dataset,
    Grant,
    KeyWrap,
    RootKey,
    UploadChunk,
    UploadLink,
    UploadSession,
    UserKey,
)
from storage.services import keys as key_service
from storage.services.errors import StorageError


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UserKey)
class UserKeyAdmin(ReadOnlyAdmin):
    list_display = ("user", "name", "fingerprint", "state", "created_at", "activated_at", "revoked_at")
    list_filter = ("state", "created_at")
    search_fields = ("user__username", "name", "fingerprint")
    actions = ["activate", "revoke"]

    @admin.action(description="Activate the selected keys")
    def activate(self, request, queryset):
        self._apply(request, queryset, key_service.activate_user_key, "activated")

    @admin.action(description="Revoke the selected keys (their wraps are removed)")
    def revoke(self, request, queryset):
        self._apply(request, queryset, key_service.revoke_user_key, "revoked")

    def _apply(self, request, queryset, change, done: str) -> None:
        count = 0
        for key in queryset:
            try:
                change(key, actor=request.user, request=request)
                count += 1
            except StorageError as exc:
                self.message_user(request, f"{key}: {exc.message}", messages.WARNING)
        self.message_user(request, f"{count} key(s) {done}.")


@admin.register(RootKey)
class RootKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "fingerprint", "active", "created_at")
    list_filter = ("active",)
    search_fields = ("name", "fingerprint")
    readonly_fields = ("fingerprint", "created_at")

    def get_readonly_fields(self, request, obj=None):
        return (*self.readonly_fields, "public_key") if obj else self.readonly_fields

    def save_model(self, request, obj, form, change) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        try:
            created = key_service.add_root_key(obj.name, obj.public_key, actor=request.user)
        except StorageError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        obj.pk = created.pk


@admin.register(Dataset)
class DatasetAdmin(ReadOnlyAdmin):
    list_display = ("mnemonic", "name", "owner", "state", "size", "generation", "created_at")
    list_filter = ("state", "created_at")
    search_fields = ("mnemonic", "name", "file_name", "owner__username")
    exclude = ("sealed_key",)


@admin.register(Grant)
class GrantAdmin(ReadOnlyAdmin):
    list_display = ("dataset", "user", "level", "granted_by", "created_at")
    list_filter = ("level",)
    search_fields = ("dataset__mnemonic", "user__username")


@admin.register(UploadLink)
class UploadLinkAdmin(ReadOnlyAdmin):
    list_display = ("label", "owner", "prefix", "expires_at", "used_files", "used_bytes", "revoked_at")
    list_filter = ("expires_at", "revoked_at")
    search_fields = ("label", "owner__username", "prefix")
    exclude = ("token_hash",)


@admin.register(Chunk)
class ChunkAdmin(ReadOnlyAdmin):
    list_display = ("dataset", "generation", "index", "size", "stored_size", "sha256")
    list_filter = ("generation",)
    search_fields = ("dataset__mnemonic", "sha256")


@admin.register(KeyWrap)
class KeyWrapAdmin(ReadOnlyAdmin):
    list_display = ("dataset", "generation", "user_key", "root_key", "created_at")
    list_filter = ("generation", "created_at")
    search_fields = ("dataset__mnemonic", "user_key__user__username", "root_key__name")
    exclude = ("wrapped",)


@admin.register(UploadSession)
class UploadSessionAdmin(ReadOnlyAdmin):
    list_display = ("file_name", "owner", "purpose", "size", "state", "created_at", "expires_at", "used_by")
    list_filter = ("state", "purpose", "created_at")
    search_fields = ("file_name", "owner__username", "sha256")


@admin.register(UploadChunk)
class UploadChunkAdmin(ReadOnlyAdmin):
    list_display = ("session", "index", "size", "sha256")
    list_filter = ("session__state",)
    search_fields = ("sha256", "session__file_name")
