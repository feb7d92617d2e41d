"""Bearer-token authentication that also records when a personal token was last used."""

from oauth2_provider.contrib.rest_framework import OAuth2Authentication

from portal.services.tokens import mark_used


class PortalTokenAuthentication(OAuth2Authentication):
    """`Authorization: Bearer <token>` with a django-oauth-toolkit access token."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            mark_used(result[1])
        return result
