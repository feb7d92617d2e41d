"""Routes of the storage API under /api/v1/."""

from rest_framework.routers import SimpleRouter

from storage.api import views

app_name = "storage-api"

router = SimpleRouter()
router.register("keys", views.UserKeyViewSet, basename="userkey")
router.register("root-keys", views.RootKeyViewSet, basename="rootkey")
router.register("datasets", views.DatasetViewSet, basename="dataset")

urlpatterns = router.urls
