"""Registry of files kept in the data directory, with their checksums for scrubbing."""

from django.db import models

from portal.querysets import RestrictedQuerySet


class StoredFileQuerySet(RestrictedQuerySet):
    """The raw file registry is an operator's concern: admins only."""


class StoredFile(models.Model):
    """One file under PORTAL_DATA_DIR, with the size and SHA-256 recorded when it was written.

    Apps write files through `portal.services.datastore`; the integrity scrub re-reads every file
    and compares. `path` is relative to the data directory.
    """

    path = models.CharField(max_length=1000, unique=True)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_verified_at = models.DateTimeField(null=True, blank=True)

    objects = StoredFileQuerySet.as_manager()

    class Meta:
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path
