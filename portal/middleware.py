"""Middleware of the core app."""

from __future__ import annotations

from django.http import HttpResponseBadRequest, JsonResponse

from portal import health

PROBES = {"/healthz": health.healthz, "/readyz": health.readyz}


class HealthProbeMiddleware:
    """Answer `/healthz` and `/readyz` before host validation, HTTPS redirects and sessions.

    Kubernetes and load balancers probe a pod by its IP address, which is not (and should not be)
    in DJANGO_ALLOWED_HOSTS, and over plain HTTP behind the TLS proxy. The probes disclose nothing
    but up/down and the names of failed checks, so they are safe to answer for any host.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        probe = PROBES.get(request.path_info)
        if probe is not None:
            return probe(request)
        return self.get_response(request)


NUL_MESSAGE = "The address holds a NUL character (%00), which no path or parameter of the portal takes."


class RefuseNulCharactersMiddleware:
    """Answer 400 to a request whose path or query string holds a NUL character.

    No portal address, filter or search takes one, and PostgreSQL can neither store nor compare
    text holding it: a lookup or search with one would fail in the database (a 500) instead.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or "%00" in request.META.get("QUERY_STRING", ""):
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": NUL_MESSAGE, "code": "invalid"}, status=400)
            return HttpResponseBadRequest(NUL_MESSAGE, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
