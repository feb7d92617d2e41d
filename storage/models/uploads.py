"""Plain chunked upload sessions, for files that apps take over as they are (slides, DICOM).

Encrypted datasets have their own upload (`Dataset`, chunks encrypted on arrival). An
`UploadSession` keeps the chunks of one file in one preallocated file under the data directory,
each checked against its SHA-256 on arrival; it can be resumed (the chunk table says what is
missing) until it expires. Finishing computes the SHA-256 of the whole file; an app then takes
the file over (`storage.services.sessions.take_file`) and the session is spent.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models

from portal.querysets import RestrictedQuerySet


class UploadState(models.TextChoices):
    RECEIVING = "receiving", "Receiving"
    COMPLETE = "complete", "Complete"
    USED = "used", "Used"
    CANCELLED = "cancelled", "Cancelled"


class UploadSessionQuerySet(RestrictedQuerySet):
    """A session is its uploader's alone (portal admins see all)."""

    def restrict(self, user, action: str) -> UploadSessionQuerySet:
        return self.filter(owner=user)


class UploadSession(models.Model):
    """One file arriving in chunks, for an app (`purpose`: "slide", "dicom", …)."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="upload_sessions"
    )
    purpose = models.CharField(max_length=30)
    file_name = models.CharField(max_length=255)
    size = models.BigIntegerField()
    chunk_size = models.PositiveIntegerField()
    expected_sha256 = models.CharField(
        max_length=64, blank=True, help_text="What the client says the file's hash is."
    )
    sha256 = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the whole file, at finish.")
    state = models.CharField(max_length=10, choices=UploadState.choices, default=UploadState.RECEIVING)
    used_by = models.CharField(
        max_length=100, blank=True, help_text="What took the file, e.g. pathology.slide:12."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = UploadSessionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "state"])]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.get_state_display()})"

    @property
    def chunk_count(self) -> int:
        return max(1, -(-self.size // self.chunk_size))

    def chunk_length(self, index: int) -> int:
        if self.size == 0:
            return 0
        return min(self.chunk_size, self.size - index * self.chunk_size)

    @property
    def path(self) -> Path:
        return Path(settings.PORTAL_DATA_DIR) / "uploads" / str(self.pk) / "data"


class UploadChunk(models.Model):
    """A chunk that arrived: its index, size and SHA-256 (the bytes are in the session's file)."""

    session = models.ForeignKey(UploadSession, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)

    class Meta:
        ordering = ["index"]
        constraints = [models.UniqueConstraint(fields=["session", "index"], name="upload_chunk_once")]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.index}"
