"""Routes of the storage API under /api/v1/."""

from rest_framework.routers import SimpleRouter

from storage.api import views

app_name = "storage-api"

router = SimpleRouter()
router.register("keys", views.UserKeyViewSet, basename="userkey")
router.register("root-keys", views.RootKeyViewSet, basename="rootkey")
router.register("datasets", views.DatasetViewSet, basename="dataset")

# Plain chunked uploads for other apps (slides, DICOM): storage/api/sessions.py.
from storage.api import sessions as session_api  # noqa: E402

router.register("uploads", session_api.UploadSessionViewSet, basename="upload")

urlpatterns = router.urls

# Upload links: managing them, and the upload-only endpoints a link opens (storage/api/links.py).
from storage.api import links as link_api  # noqa: E402

urlpatterns = [*urlpatterns, *link_api.urlpatterns]

# Dataset jobs: re-key and scrub (storage/api/jobs.py).
from django.urls import path  # noqa: E402

from storage.api import jobs as job_api  # noqa: E402

urlpatterns += [
    path("datasets/<str:mnemonic>/rekey/", job_api.DatasetRekeyView.as_view(), name="dataset-rekey"),
    path("datasets/<str:mnemonic>/scrub/", job_api.DatasetScrubView.as_view(), name="dataset-scrub"),
]
