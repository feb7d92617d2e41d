"""Encrypted datasets: the file's chunks on disk, its data key wrapped per key, and who may use it."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from portal.querysets import RestrictedQuerySet


class DatasetState(models.TextChoices):
    UPLOADING = "uploading", "Uploading"
    AVAILABLE = "available", "Available"
    DELETED = "deleted", "In the recycle bin"
    PURGED = "purged", "Purged"


class GrantLevel(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Write (share, re-key, delete)"


class DatasetQuerySet(RestrictedQuerySet):
    """Grant holders see a dataset; write holders (the owner has one) change, delete and share it.

    Portal admins see every dataset's description, but reading data needs a key wrapped for one of
    the reader's keys, which only a grant gives (`storage.services.access.grant_of`).
    """

    def restrict(self, user, action: str) -> DatasetQuerySet:
        grants = Grant.objects.filter(user=user)
        if action != "view":
            grants = grants.filter(level=GrantLevel.WRITE)
        return self.filter(pk__in=grants.values("dataset_id"))


class Dataset(models.Model):
    """One uploaded file, stored as AES-256-GCM encrypted chunks under its own random data key.

    The server keeps the data key only wrapped (`KeyWrap`) for the keys of grant holders and for
    the root keys; while an upload is in flight it is also kept sealed under the server secret
    (`sealed_key`, until `sealed_until`), never in plaintext. Chunk files of key generation N live
    in `datasets/<mnemonic>/g<N>/chunks/` beside `recovery.json`; re-keying writes generation N+1
    and switches `generation` in one transaction.
    """

    mnemonic = models.CharField(
        max_length=80, unique=True, help_text="Human-friendly id, e.g. calm_brave_otter."
    )
    name = models.CharField(max_length=255)
    file_name = models.CharField(max_length=255)
    description = models.TextField(blank=True)
    project = models.ForeignKey(
        "metadata.Project", null=True, blank=True, on_delete=models.SET_NULL, related_name="datasets"
    )
    state = models.CharField(max_length=10, choices=DatasetState.choices, default=DatasetState.UPLOADING)
    size = models.BigIntegerField(help_text="Plaintext size in bytes, as announced at the start.")
    chunk_size = models.PositiveIntegerField()
    sha256 = models.CharField(
        max_length=64, blank=True, help_text="Dataset hash: SHA-256 over the chunk hashes."
    )
    first_chunk_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    key_fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the data key, hex.")
    generation = models.PositiveIntegerField(default=1, help_text="Key generation of the stored chunks.")
    sealed_key = models.TextField(
        blank=True, help_text="The data key sealed under the server secret (uploads)."
    )
    sealed_until = models.DateTimeField(null=True, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="datasets")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    upload_link = models.ForeignKey(
        "storage.UploadLink", null=True, blank=True, on_delete=models.SET_NULL, related_name="datasets"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    purge_after = models.DateTimeField(null=True, blank=True)

    objects = DatasetQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.mnemonic} ({self.name})"

    @property
    def chunk_count(self) -> int:
        return max(1, -(-self.size // self.chunk_size)) if self.size else 1

    def chunk_length(self, index: int) -> int:
        """The plaintext length chunk `index` must have (the last one is shorter)."""
        if index < self.chunk_count - 1:
            return self.chunk_size
        return self.size - self.chunk_size * (self.chunk_count - 1)

    def directory(self, generation: int | None = None) -> str:
        """The generation's directory, relative to the data directory."""
        return f"datasets/{self.mnemonic}/g{generation or self.generation}"


class Chunk(models.Model):
    """One stored chunk of one key generation: where it is, its nonce, and its plaintext's hash."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="chunks")
    generation = models.PositiveIntegerField()
    index = models.PositiveIntegerField()
    size = models.PositiveIntegerField(help_text="Plaintext bytes.")
    stored_size = models.PositiveIntegerField(help_text="Ciphertext and tag bytes on disk.")
    nonce = models.BinaryField(max_length=12)
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the plaintext, hex.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset_id", "generation", "index"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "generation", "index"], name="one_chunk_per_position")
        ]

    def __str__(self) -> str:
        return f"{self.dataset_id} g{self.generation} #{self.index}"


class KeyWrap(models.Model):
    """The data key of one key generation, RSA-OAEP-wrapped for one user key or one root key."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="wraps")
    generation = models.PositiveIntegerField()
    user_key = models.ForeignKey(
        "storage.UserKey", null=True, blank=True, on_delete=models.CASCADE, related_name="wraps"
    )
    root_key = models.ForeignKey(
        "storage.RootKey", null=True, blank=True, on_delete=models.CASCADE, related_name="wraps"
    )
    wrapped = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset_id", "generation", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(user_key__isnull=False, root_key__isnull=True)
                | Q(user_key__isnull=True, root_key__isnull=False),
                name="wrap_for_one_user_or_root_key",
            ),
            models.UniqueConstraint(
                fields=["dataset", "generation", "user_key"], name="one_wrap_per_user_key"
            ),
            models.UniqueConstraint(
                fields=["dataset", "generation", "root_key"], name="one_wrap_per_root_key"
            ),
        ]

    def __str__(self) -> str:
        holder = f"user key {self.user_key_id}" if self.user_key_id else f"root key {self.root_key_id}"
        return f"{self.dataset_id} g{self.generation} for {holder}"


class Grant(models.Model):
    """A user's right to a dataset: read, or write (also share, re-key, delete)."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dataset_grants"
    )
    level = models.CharField(max_length=5, choices=GrantLevel.choices)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset_id", "created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["dataset", "user"], name="one_grant_per_user")]

    def __str__(self) -> str:
        return f"{self.user} {self.level} {self.dataset_id}"
