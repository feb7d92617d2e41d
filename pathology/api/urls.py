"""Routes of the pathology API under /api/v1/."""

from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from pathology.api import views

app_name = "pathology-api"

router = SimpleRouter()
router.register("slides", views.SlideViewSet, basename="slide")
router.register("models", views.ModelVersionViewSet, basename="model-version")
router.register("inferences", views.InferenceViewSet, basename="inference")

urlpatterns = [
    *router.urls,
    path("slides/<int:pk>/deepzoom.dzi", views.DeepZoomDescriptorView.as_view(), name="slide-dzi"),
    re_path(
        r"^slides/(?P<pk>\d+)/deepzoom_files/(?P<level>\d+)/(?P<x>\d+)_(?P<y>\d+)\.(?P<fmt>[a-z0-9]{1,8})$",
        views.DeepZoomTileView.as_view(),
        name="slide-dzi-tile",
    ),
    path(
        "slides/<int:pk>/tiles/<int:level>/<int:x>/<int:y>",
        views.PyramidTileView.as_view(),
        name="slide-tile",
    ),
    path("slides/<int:pk>/region", views.RegionView.as_view(), name="slide-region"),
    path(
        "inferences/<int:pk>/tiles/<int:level>/<int:x>/<int:y>",
        views.InferenceTileView.as_view(),
        name="inference-tile",
    ),
    path("slides/<int:pk>/images/<slug:name>", views.SlideImageView.as_view(), name="slide-image"),
]
