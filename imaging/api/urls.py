"""Routes of the imaging API under /api/v1/imaging/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from imaging.api import views

app_name = "imaging-api"

router = SimpleRouter()
router.register("imaging/ingests", views.IngestRunViewSet, basename="ingest")
router.register("imaging/studies", views.StudyViewSet, basename="study")
router.register("imaging/series", views.SeriesViewSet, basename="series")

urlpatterns = [
    *router.urls,
    path("imaging/projects/<int:pk>/deidentification/", views.ProjectDeidView.as_view(), name="project-deid"),
    path(
        "imaging/projects/<int:pk>/reidentification/",
        views.ReidentificationView.as_view(),
        name="project-reid",
    ),
]
