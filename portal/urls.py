"""Root URLconf: pages, admin, auth, API, schema and docs, probes."""

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from portal import health, views

portal_patterns = (
    [
        path("", views.HomeView.as_view(), name="home"),
        path("accounts/login/", auth_views.LoginView.as_view(
            template_name="portal/login.html", redirect_authenticated_user=True), name="login"),
        path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
        path("profile/", views.ProfileView.as_view(), name="profile"),
        path("profile/tokens/<int:pk>/revoke/", views.TokenRevokeView.as_view(), name="token-revoke"),
        path("jobs/", views.JobListView.as_view(), name="job-list"),
        path("jobs/start/", views.JobActionView.as_view(), {"verb": "start"}, name="job-start"),
        path("jobs/<int:pk>/", views.JobDetailView.as_view(), name="job-detail"),
        path("jobs/<int:pk>/cancel/", views.JobActionView.as_view(), {"verb": "cancel"},
             name="job-cancel"),
        path("jobs/<int:pk>/retry/", views.JobActionView.as_view(), {"verb": "retry"},
             name="job-retry"),
    ],
    "portal",
)

urlpatterns = [
    path("", include(portal_patterns)),
    path("", include("metadata.web.urls", namespace="metadata")),
    path("", include("storage.web.urls", namespace="storage")),
    path("", include("pathology.web", namespace="pathology")),
    path("", include("imaging.web", namespace="imaging")),
    path("", include("storage.web.link_urls", namespace="storage-links")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("api/v1/", include("portal.api.urls", namespace="api")),
    path("api/v1/", include("metadata.api.urls", namespace="metadata-api")),
    path("api/v1/", include("storage.api.urls", namespace="storage-api")),
    path("api/v1/", include("pathology.api.urls", namespace="pathology-api")),
    path("api/v1/", include("imaging.api.urls", namespace="imaging-api")),
    path("dicomweb/", include("imaging.dicomweb.urls", namespace="dicomweb")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

if settings.OIDC_ENABLED:
    urlpatterns.append(path("oidc/", include("mozilla_django_oidc.urls")))
