"""Routes of the imaging API under /api/v1/imaging/."""

from rest_framework.routers import SimpleRouter

from imaging.api import views

app_name = "imaging-api"

router = SimpleRouter()
router.register("imaging/ingests", views.IngestRunViewSet, basename="ingest")
router.register("imaging/studies", views.StudyViewSet, basename="study")
router.register("imaging/series", views.SeriesViewSet, basename="series")

urlpatterns = router.urls
