"""`manage.py ship_templates`: create or update the shipped catalogue and templates again."""

from django.core.management.base import BaseCommand

from metadata.models import Property, Template, TemplateProperty
from metadata.shipped import ship_templates


class Command(BaseCommand):
    help = "Create or update the shipped properties and templates (sequencing, pathology, imaging)."

    def handle(self, *args, **options):
        ship_templates(Property, Template, TemplateProperty)
        self.stdout.write(f"{Template.objects.count()} templates, {Property.objects.count()} properties.")
