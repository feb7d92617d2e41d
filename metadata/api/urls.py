"""`/api/v1/` routes of the metadata app."""

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from metadata.api import io_views, views
from metadata.api.qr_views import EntityQRView

app_name = "metadata-api"

router = SimpleRouter()
router.register("projects", views.ProjectViewSet, basename="project")
router.register("properties", views.PropertyViewSet, basename="property")
router.register("templates", views.TemplateViewSet, basename="template")

project_router = SimpleRouter()
project_router.register("kinds", views.EntityKindViewSet, basename="kind")
project_router.register("columns", views.ColumnViewSet, basename="column")
project_router.register("entities", views.EntityViewSet, basename="entity")
project_router.register("events", views.EventViewSet, basename="event")
project_router.register("matrix", views.MatrixViewSet, basename="matrix")
project_router.register("batches", views.BatchViewSet, basename="batch")
project_router.register("imports", io_views.ImportViewSet, basename="import")
project_router.register("export", io_views.MatrixExportViewSet, basename="export")
project_router.register("events/export", io_views.HistoryExportViewSet, basename="event-export")

urlpatterns = [
    *router.urls,
    re_path(r"^projects/(?P<project_pk>\d+)/entities/(?P<pk>\d+)/qr/$", EntityQRView.as_view(),
            name="entity-qr"),
    *[
        re_path(r"^projects/(?P<project_pk>\d+)/" + str(p.pattern).removeprefix("^"), p.callback, name=p.name)
        for p in project_router.urls
    ],
]
