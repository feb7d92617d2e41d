"""Personal API tokens (django-oauth-toolkit access tokens with a name)."""

from django.conf import settings
from django.db import models

from portal.querysets import RestrictedQuerySet


class ApiTokenQuerySet(RestrictedQuerySet):
    """Each user sees and revokes only their own tokens."""

    def restrict(self, user, action: str) -> "ApiTokenQuerySet":
        return self.filter(user=user)


class ApiToken(models.Model):
    """A named personal token; the secret itself is the linked OAuth2 access token.

    The secret is shown once at creation; afterwards only its last four characters are shown.
    Revoking deletes the access token (so it stops working at once) and keeps this row as a record.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    scopes = models.CharField(max_length=200)
    access_token = models.OneToOneField(
        "oauth2_provider.AccessToken", null=True, blank=True, on_delete=models.SET_NULL,
        related_name="portal_token",
    )
    hint = models.CharField(max_length=8, help_text="Last characters of the secret.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} (…{self.hint})"

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()

    @property
    def is_active(self) -> bool:
        from django.utils import timezone

        return self.revoked_at is None and self.expires_at > timezone.now()
