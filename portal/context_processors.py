"""Template context shared by every page."""

from django.conf import settings


def site(request) -> dict:
    return {
        "site_name": settings.PORTAL_SITE_NAME,
        "oidc_enabled": settings.OIDC_ENABLED,
        "oidc_provider_name": settings.OIDC_PROVIDER_NAME,
    }
