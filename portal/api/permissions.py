"""Central API permission: signed in, token scopes, staff-only views.

Token scopes are enforced here for every endpoint: safe methods need `read`, anything else
`write`; a view may ask for other scopes (`required_scopes = {"POST": ["upload"]}`), and staff-only
views need the `admin` scope. Sessions carry every scope. Object-level access is not decided here
but by `RestrictedQuerySet.for_user()` in the base viewset.
"""

from rest_framework import permissions

from portal.services.tokens import token_scopes

SAFE_METHODS = permissions.SAFE_METHODS


def scopes_required(view, method: str) -> list[str]:
    custom = getattr(view, "required_scopes", None) or {}
    if method in custom:
        scopes = list(custom[method])
    else:
        scopes = ["read"] if method in SAFE_METHODS else ["write"]
    if getattr(view, "staff_only", False):
        scopes.append("admin")
    return scopes


class PortalPermission(permissions.BasePermission):
    """Authenticated, active, with the scopes the method needs; staff for staff-only views."""

    message = "You do not have permission to perform this action."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        if getattr(view, "staff_only", False) and not user.is_staff:
            self.message = "Only administrators can do this."
            return False
        granted = token_scopes(request.auth)
        if granted is not None:
            missing = [s for s in scopes_required(view, request.method) if s not in granted]
            if missing:
                self.message = (
                    f"Your token lacks the scope(s) {', '.join(missing)} needed for this request."
                )
                return False
        return True
