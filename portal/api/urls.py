"""`/api/v1/` of the core app; other apps register their routes in their own api/urls.py."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from portal.api import views

app_name = "api"

router = SimpleRouter()
router.register("jobs", views.JobViewSet, basename="job")
router.register("tokens", views.ApiTokenViewSet, basename="token")
router.register("audit-events", views.AuditEventViewSet, basename="auditevent")

urlpatterns = [
    path("", views.ApiRootView.as_view(), name="root"),
    path("me/", views.MeView.as_view(), name="me"),
    path("job-kinds/", views.JobKindListView.as_view(), name="job-kinds"),
    path("links/<str:kind>/", views.LinkListView.as_view(), name="links"),
    *router.urls,
]
