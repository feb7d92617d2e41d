"""Upload links: a token that lets someone without an account upload data for its owner."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from portal.querysets import RestrictedQuerySet


class UploadLinkQuerySet(RestrictedQuerySet):
    def restrict(self, user, action: str) -> UploadLinkQuerySet:
        return self.filter(owner=user)


class UploadLink(models.Model):
    """An upload-only token: data arriving through it is wrapped for the owner's keys.

    Only the SHA-256 of the token is stored. Limits are optional; expired or revoked links refuse.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="upload_links")
    label = models.CharField(max_length=200)
    token_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12, help_text="The token's first characters, to recognise it.")
    expires_at = models.DateTimeField()
    max_bytes = models.BigIntegerField(null=True, blank=True)
    max_files = models.PositiveIntegerField(null=True, blank=True)
    used_bytes = models.BigIntegerField(default=0)
    used_files = models.PositiveIntegerField(default=0)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = UploadLinkQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.label} ({self.prefix}…)"
