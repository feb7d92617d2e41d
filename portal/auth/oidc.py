"""OpenID Connect sign-in (relying party) and the portal's own provider mode.

`PortalOIDCBackend` signs users in through an external provider (mozilla-django-oidc): accounts
are matched by the stable `sub` claim, then by e-mail, and created on first sign-in; a configured
claim value makes a user staff. `PortalOAuth2Validator` adds standard claims when the portal itself
acts as an OpenID provider (django-oauth-toolkit with PORTAL_OIDC_IDP_KEY_FILE set).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView
from oauth2_provider.oauth2_validators import OAuth2Validator

from portal.services.audit import record_audit_event

User = get_user_model()


def _claim_values(claims: dict, name: str) -> set[str]:
    value = claims.get(name)
    if value is None:
        return set()
    if isinstance(value, str):
        return {value}
    if isinstance(value, (list, tuple)):
        return {str(v) for v in value}
    return {str(value)}


def staff_from_claims(claims: dict) -> bool:
    wanted = set(settings.OIDC_STAFF_VALUES)
    return bool(wanted & _claim_values(claims, settings.OIDC_STAFF_CLAIM))


class PortalOIDCBackend(OIDCAuthenticationBackend):
    """Relying-party backend: find or create the account behind the provider's claims."""

    def filter_users_by_claims(self, claims):
        sub = claims.get("sub")
        if sub:
            users = self.UserModel.objects.filter(oidc_subject=sub)
            if users.exists():
                return users
        email = claims.get("email")
        if email and claims.get("email_verified", True):
            return self.UserModel.objects.filter(email__iexact=email, oidc_subject="")
        return self.UserModel.objects.none()

    def _free_username(self, claims) -> str:
        base = (
            claims.get(settings.OIDC_USERNAME_CLAIM)
            or (claims.get("email") or "").split("@")[0]
            or "user"
        )[:140]
        candidate, n = base, 1
        while self.UserModel.objects.filter(username=candidate).exists():
            n += 1
            candidate = f"{base}{n}"
        return candidate

    def create_user(self, claims):
        user = self.UserModel(
            username=self._free_username(claims),
            email=claims.get("email", ""),
            first_name=claims.get("given_name", "")[:150],
            last_name=claims.get("family_name", "")[:150],
            oidc_subject=claims.get("sub", ""),
            is_staff=staff_from_claims(claims),
        )
        user.set_unusable_password()
        user.save()
        record_audit_event("auth.user_created", actor=user, obj=user, method="oidc")
        return user

    def update_user(self, user, claims):
        user.email = claims.get("email", user.email)
        user.first_name = claims.get("given_name", user.first_name)[:150]
        user.last_name = claims.get("family_name", user.last_name)[:150]
        user.oidc_subject = claims.get("sub", user.oidc_subject)
        if settings.OIDC_STAFF_VALUES:
            user.is_staff = staff_from_claims(claims)
        user.save()
        return user


class AuditedCallbackView(OIDCAuthenticationCallbackView):
    """The OIDC callback; a failed sign-in is audited (a successful one by the login signal)."""

    def login_failure(self):
        record_audit_event("auth.login_failed", request=self.request, method="oidc",
                           reason=self.request.GET.get("error", "rejected"))
        return super().login_failure()


class PortalOAuth2Validator(OAuth2Validator):
    """Claims the portal hands out when it is the OpenID provider."""

    oidc_claim_scope = None  # release every claim below whatever the requested scopes

    def get_additional_claims(self, request):
        user = request.user
        return {
            "email": user.email,
            "email_verified": bool(user.email),
            "preferred_username": user.username,
            "given_name": user.first_name,
            "family_name": user.last_name,
            "name": user.get_full_name() or user.username,
            "groups": list(user.groups.values_list("name", flat=True)),
        }
