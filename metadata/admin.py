"""Admin site registrations of the metadata models (search and filters on each).

Events are read-only here as everywhere: the database refuses changes; redaction has its own
action in the project pages and API.
"""

from django.contrib import admin

from metadata.models import (
    Entity,
    EntityKind,
    Event,
    JoinRequest,
    MatrixCache,
    Membership,
    Project,
    ProjectProperty,
    Property,
    RowSnapshot,
    RowState,
    Template,
    TemplateProperty,
)
from portal.admin import AppendOnlyAdmin


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "template", "created_at")
    list_filter = ("template", "created_at")
    search_fields = ("name", "description", "owner__username")
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("project", "user", "role", "added_at")
    list_filter = ("role", "project")
    search_fields = ("project__name", "user__username")


@admin.register(JoinRequest)
class JoinRequestAdmin(admin.ModelAdmin):
    list_display = ("project", "user", "state", "created_at", "decided_by")
    list_filter = ("state", "project")
    search_fields = ("project__name", "user__username", "message")


class TemplatePropertyInline(admin.TabularInline):
    model = TemplateProperty
    extra = 0
    autocomplete_fields = ("property",)


@admin.register(Property)
class PropertyAdmin(admin.ModelAdmin):
    list_display = ("key", "label", "type", "unit")
    list_filter = ("type", "options_only")
    search_fields = ("key", "label", "description")


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "key")
    list_filter = ("properties__type",)
    search_fields = ("key", "name", "description")
    inlines = [TemplatePropertyInline]


@admin.register(TemplateProperty)
class TemplatePropertyAdmin(admin.ModelAdmin):
    list_display = ("template", "property", "entity_kind", "position", "required")
    list_filter = ("template", "entity_kind", "required")
    search_fields = ("template__name", "property__key")


@admin.register(EntityKind)
class EntityKindAdmin(admin.ModelAdmin):
    list_display = ("project", "key", "label", "prefix", "parent")
    list_filter = ("project",)
    search_fields = ("key", "label", "project__name")


@admin.register(ProjectProperty)
class ProjectPropertyAdmin(admin.ModelAdmin):
    list_display = ("project", "entity_kind", "property", "position", "required")
    list_filter = ("project", "required")
    search_fields = ("project__name", "property__key")


@admin.register(Entity)
class EntityAdmin(admin.ModelAdmin):
    list_display = ("mnemonic", "project", "kind", "parent", "created_at")
    list_filter = ("project", "kind__key")
    search_fields = ("mnemonic", "project__name")
    raw_id_fields = ("parent",)


@admin.register(Event)
class EventAdmin(AppendOnlyAdmin):
    list_display = ("timestamp", "project", "entity", "property", "kind", "value", "author", "redacted")
    list_filter = ("kind", "redacted", "project", "timestamp")
    search_fields = ("entity__mnemonic", "property__key", "author__username", "comment")
    date_hierarchy = "timestamp"


class DerivedAdmin(AppendOnlyAdmin):
    """The matrix caches are derived from the events (`manage.py rebuild_matrix_cache`): view only."""


@admin.register(RowState)
class RowStateAdmin(DerivedAdmin):
    list_display = ("entity", "project", "event_count", "last_event_at", "updated_at")
    list_filter = ("project", "updated_at")
    search_fields = ("entity__mnemonic", "project__name")


@admin.register(RowSnapshot)
class RowSnapshotAdmin(DerivedAdmin):
    list_display = ("entity", "project", "taken_at")
    list_filter = ("project", "taken_at")
    search_fields = ("entity__mnemonic", "project__name")


@admin.register(MatrixCache)
class MatrixCacheAdmin(DerivedAdmin):
    list_display = ("project", "rebuilt_at")
    list_filter = ("rebuilt_at",)
    search_fields = ("project__name",)
