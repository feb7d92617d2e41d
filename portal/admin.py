"""Admin site registrations of the core models (search and filters on each)."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from portal.models import ApiToken, AuditEvent, Job, StoredFile, User

admin.site.site_header = "Research Data Portal administration"
admin.site.site_title = "Portal admin"


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    list_display = ("username", "email", "first_name", "last_name", "is_staff", "is_active",
                    "last_login")
    list_filter = ("is_staff", "is_superuser", "is_active", "groups")
    search_fields = ("username", "first_name", "last_name", "email", "oidc_subject")
    fieldsets = (*UserAdmin.fieldsets, ("Single sign-on", {"fields": ("oidc_subject",)}))


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "state", "progress", "created_by", "created_at", "finished_at")
    list_filter = ("state", "kind", "created_at")
    search_fields = ("kind", "message", "error", "created_by__username")
    readonly_fields = [f.name for f in Job._meta.fields]
    date_hierarchy = "created_at"


class AppendOnlyAdmin(admin.ModelAdmin):
    """For records the database itself keeps append-only (audit log, metadata events): view only."""

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(AppendOnlyAdmin):
    """Read-only: the audit log is append-only."""

    list_display = ("timestamp", "actor_repr", "action", "object_type", "object_repr", "ip_address")
    list_filter = ("action", "object_type", "timestamp")
    search_fields = ("actor_repr", "action", "object_repr", "object_id")
    date_hierarchy = "timestamp"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "scopes", "hint", "created_at", "expires_at", "revoked_at",
                    "last_used_at")
    list_filter = ("revoked_at", "expires_at", "created_at")
    search_fields = ("name", "user__username", "hint")
    readonly_fields = ("user", "name", "scopes", "hint", "access_token", "created_at",
                       "expires_at", "revoked_at", "last_used_at")

    def has_add_permission(self, request):
        return False  # tokens are made on the profile page, where the secret is shown once


@admin.register(StoredFile)
class StoredFileAdmin(admin.ModelAdmin):
    list_display = ("path", "size", "sha256", "created_at", "last_verified_at")
    list_filter = ("created_at", "last_verified_at")
    search_fields = ("path", "sha256")
    readonly_fields = ("path", "size", "sha256", "created_at", "last_verified_at")
