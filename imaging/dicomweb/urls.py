"""DICOMweb routes, under /dicomweb/ (all visible studies) and /dicomweb/projects/<id>/."""

from django.urls import re_path

from imaging.dicomweb import views

app_name = "dicomweb"
UID = r"[0-9]+(?:\.[0-9]+)*"

_routes = [
    (r"studies", views.SearchStudies, "studies"),
    (rf"studies/(?P<study>{UID})", views.StudyResource, "study"),
    (rf"studies/(?P<study>{UID})/metadata", views.Metadata, "study-metadata"),
    (rf"studies/(?P<study>{UID})/series", views.SearchSeries, "study-series"),
    (rf"studies/(?P<study>{UID})/series/(?P<series>{UID})", views.Retrieve, "series"),
    (rf"studies/(?P<study>{UID})/series/(?P<series>{UID})/metadata", views.Metadata, "series-metadata"),
    (
        rf"studies/(?P<study>{UID})/series/(?P<series>{UID})/instances",
        views.SearchInstances,
        "series-instances",
    ),
    (
        rf"studies/(?P<study>{UID})/series/(?P<series>{UID})/instances/(?P<instance>{UID})",
        views.Retrieve,
        "instance",
    ),
    (
        rf"studies/(?P<study>{UID})/series/(?P<series>{UID})/instances/(?P<instance>{UID})/metadata",
        views.Metadata,
        "instance-metadata",
    ),
    (
        rf"studies/(?P<study>{UID})/series/(?P<series>{UID})/instances/(?P<instance>{UID})/bulkdata/(?P<tag>[0-9A-F]{{8}})",
        views.BulkData,
        "bulkdata",
    ),
    (rf"studies/(?P<study>{UID})/instances", views.SearchInstances, "study-instances"),
    (r"series", views.SearchSeries, "all-series"),
    (r"instances", views.SearchInstances, "all-instances"),
]

urlpatterns = []
for pattern, view, name in _routes:
    urlpatterns.append(re_path(rf"^{pattern}/?$", view.as_view(), name=name))
    urlpatterns.append(
        re_path(rf"^projects/(?P<project>[0-9]+)/{pattern}/?$", view.as_view(), name=f"project-{name}")
    )
