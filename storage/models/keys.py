"""Public keys: a user's RSA keys (the private halves stay with the user) and the operator's root keys."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from portal.querysets import RestrictedQuerySet


class KeyState(models.TextChoices):
    PENDING = "pending", "Waiting for activation"
    ACTIVE = "active", "Active"
    REVOKED = "revoked", "Revoked"


class UserKeyQuerySet(RestrictedQuerySet):
    """Each user sees and manages their own keys; admins all (they activate new ones)."""

    def restrict(self, user, action: str) -> UserKeyQuerySet:
        return self.filter(user=user)

    def active(self) -> UserKeyQuerySet:
        return self.filter(state=KeyState.ACTIVE)


class UserKey(models.Model):
    """A user's RSA-4096 public key (RSA-OAEP with SHA-256) that dataset keys are wrapped for.

    The key pair is made in the browser or with ssh-keygen/openssl; only the public half is here.
    New keys wait for an admin's activation when STORAGE_KEYS_NEED_ACTIVATION is on; a revoked key
    loses its wraps and gets no new ones.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="storage_keys")
    name = models.CharField(max_length=100)
    public_key = models.TextField(help_text="PEM (SubjectPublicKeyInfo).")
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the DER public key, hex.")
    state = models.CharField(max_length=10, choices=KeyState.choices, default=KeyState.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = UserKeyQuerySet.as_manager()

    class Meta:
        ordering = ["user_id", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "fingerprint"], name="one_registration_per_user_key")
        ]

    def __str__(self) -> str:
        return f"{self.user} / {self.name} ({self.fingerprint[:16]})"


class RootKeyQuerySet(RestrictedQuerySet):
    """Root keys are the operator's: admins only (deny by default)."""

    def active(self) -> RootKeyQuerySet:
        return self.filter(active=True)


class RootKey(models.Model):
    """An operator's recovery public key: every dataset key is also wrapped for every active one.

    Its private half is kept offline; with it and a dataset's recovery file the CLI decrypts the
    data with no database (`python -m storage.cli recover`).
    """

    name = models.CharField(max_length=100, unique=True)
    public_key = models.TextField(help_text="PEM (SubjectPublicKeyInfo).")
    fingerprint = models.CharField(max_length=64, unique=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = RootKeyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint[:16]})"
