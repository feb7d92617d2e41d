"""Properties (the columns of a sheet), templates (named sets of them) and a project's own set."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from metadata.querysets import ProjectScopedQuerySet
from portal.querysets import RestrictedQuerySet

KEY_VALIDATOR = RegexValidator(
    r"^[a-z][a-z0-9_]{0,62}$", "Use lower-case letters, digits and underscores, starting with a letter."
)


class PropertyType(models.TextChoices):
    TEXT = "text", "Text"
    INTEGER = "integer", "Integer"
    DECIMAL = "decimal", "Decimal"
    DATE = "date", "Date"
    BOOLEAN = "boolean", "Yes/no"
    CHOICE = "choice", "Choice"
    DATASET = "dataset", "Link to a dataset"
    SLIDE = "slide", "Link to a slide"
    STUDY = "study", "Link to a DICOM study"


LINK_TYPES = (PropertyType.DATASET, PropertyType.SLIDE, PropertyType.STUDY)


class CatalogueQuerySet(RestrictedQuerySet):
    """The shared catalogue: every signed-in user reads it; portal admins change it."""

    def restrict(self, user, action: str) -> CatalogueQuerySet:
        return self.all() if action == "view" else self.none()


class Property(models.Model):
    """One kind of value a sheet can hold: its key, meaning, type, unit and validation.

    Validation informs, it does not block: a value that fails is stored and shown in red.
    """

    key = models.CharField(max_length=63, unique=True, validators=[KEY_VALIDATOR])
    label = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    type = models.CharField(max_length=10, choices=PropertyType.choices, default=PropertyType.TEXT)
    unit = models.CharField(max_length=50, blank=True)
    options = models.JSONField(
        default=list, blank=True, help_text='Suggested values: [{"value": "...", "description": "..."}]'
    )
    options_only = models.BooleanField(
        default=False, help_text="Values outside the options are flagged as invalid."
    )
    regex = models.CharField(max_length=500, blank=True, help_text="A value must match this pattern.")
    min_value = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    max_value = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    examples = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CatalogueQuerySet.as_manager()

    class Meta:
        ordering = ["key"]
        verbose_name_plural = "properties"

    def __str__(self) -> str:
        return f"{self.label} ({self.key})"


class Template(models.Model):
    """A named set of properties and entity kinds a project can start from."""

    key = models.CharField(max_length=63, unique=True, validators=[KEY_VALIDATOR])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    entity_kinds = models.JSONField(
        default=list,
        blank=True,
        help_text='Kinds of rows: [{"key": "sample", "label": "Sample", "prefix": "S", "parent": "patient"}]',
    )
    properties = models.ManyToManyField(Property, through="TemplateProperty", related_name="templates")

    objects = CatalogueQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TemplateProperty(models.Model):
    """A property's place in a template, and which entity kind it describes."""

    template = models.ForeignKey(Template, on_delete=models.CASCADE, related_name="template_properties")
    property = models.ForeignKey(Property, on_delete=models.PROTECT, related_name="+")
    entity_kind = models.CharField(max_length=63, default="sample")
    position = models.PositiveIntegerField(default=0)
    required = models.BooleanField(default=False)

    class Meta:
        ordering = ["template", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["template", "property", "entity_kind"], name="template_property_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.template}: {self.property.key} ({self.entity_kind})"


class ProjectProperty(models.Model):
    """A column of a project's sheet: copied from its template, then adapted by project admins."""

    project = models.ForeignKey(
        "metadata.Project", on_delete=models.CASCADE, related_name="project_properties"
    )
    property = models.ForeignKey(Property, on_delete=models.PROTECT, related_name="project_properties")
    entity_kind = models.ForeignKey("metadata.EntityKind", on_delete=models.CASCADE, related_name="columns")
    position = models.PositiveIntegerField(default=0)
    required = models.BooleanField(default=False)
    added_at = models.DateTimeField(auto_now_add=True)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = ProjectScopedQuerySet.as_manager()

    class Meta:
        ordering = ["project", "entity_kind", "position", "id"]
        verbose_name_plural = "project properties"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "entity_kind", "property"], name="column_once_per_kind"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project}: {self.property.key}"
