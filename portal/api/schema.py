"""OpenAPI descriptions for the portal's own authentication classes."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class PortalTokenScheme(OpenApiAuthenticationExtension):
    target_class = "portal.api.authentication.PortalTokenAuthentication"
    name = "bearerToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token from your profile page. Scopes: read, write, "
                           "upload, admin.",
        }
