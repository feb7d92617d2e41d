"""Middleware of the core app."""

from __future__ import annotations

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
