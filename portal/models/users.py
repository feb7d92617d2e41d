"""The portal's user model (custom from the first migration so later fields need no swap)."""

from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models

from portal.querysets import RestrictedQuerySet


class UserQuerySet(RestrictedQuerySet):
    """Signed-in users may find other active users (to share with them); change only themselves."""

    def restrict(self, user, action: str) -> "UserQuerySet":
        if action == "view":
            return self.filter(is_active=True)
        return self.filter(pk=user.pk)


class PortalUserManager(UserManager.from_queryset(UserQuerySet)):
    """User manager whose querysets know `for_user()`."""


class User(AbstractUser):
    """A person using the portal, signed in locally or through OpenID Connect.

    `oidc_subject` is the identity provider's stable `sub` claim; it links an account to its
    external identity even when the e-mail address changes.
    """

    oidc_subject = models.CharField(
        "OIDC subject", max_length=255, blank=True, default="", db_index=True,
        help_text="Stable identifier from the identity provider (empty for local accounts).",
    )

    objects = PortalUserManager()

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        ordering = ["username"]

    @property
    def display_name(self) -> str:
        return self.get_full_name() or self.username
