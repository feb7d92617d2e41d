"""DICOMweb routes, under /dicomweb/ (all visible studies) and /dicomweb/projects/<id>/."""

from django.urls import re_path

from imaging.dicomweb import views

app_name = "dicomweb"
UID = r"[0-9]+(?:\.[0-9]+)*"
STUDY = rf"studies/(?P<study>{UID})"
SERIES = rf"{STUDY}/series/(?P<series>{UID})"
INSTANCE = rf"{SERIES}/instances/(?P<instance>{UID})"
FRAMES = r"(?P<frames>[0-9]{1,6}(?:,[0-9]{1,6}){0,999})"

_routes = [
    # QIDO-RS
    ("studies", views.SearchStudies, "studies"),
    (f"{STUDY}/series", views.SearchSeries, "study-series"),
    (f"{STUDY}/instances", views.SearchInstances, "study-instances"),
    (f"{SERIES}/instances", views.SearchInstances, "series-instances"),
    ("series", views.SearchSeries, "all-series"),
    ("instances", views.SearchInstances, "all-instances"),
    # WADO-RS (and STOW-RS into a study)
    (STUDY, views.StudyResource, "study"),
    (SERIES, views.Retrieve, "series"),
    (INSTANCE, views.Retrieve, "instance"),
    (f"{STUDY}/metadata", views.Metadata, "study-metadata"),
    (f"{SERIES}/metadata", views.Metadata, "series-metadata"),
    (f"{INSTANCE}/metadata", views.Metadata, "instance-metadata"),
    (f"{INSTANCE}/bulkdata/(?P<tag>[0-9A-F]{{8}})", views.BulkData, "bulkdata"),
    (f"{INSTANCE}/frames/{FRAMES}", views.Frames, "frames"),
    (f"{INSTANCE}/rendered", views.Rendered, "instance-rendered"),
    (f"{INSTANCE}/frames/(?P<frame>[0-9]{{1,6}})/rendered", views.Rendered, "frame-rendered"),
    (f"{SERIES}/rendered", views.Rendered, "series-rendered"),
    (f"{INSTANCE}/thumbnail", views.Thumbnail, "instance-thumbnail"),
    (f"{SERIES}/thumbnail", views.Thumbnail, "series-thumbnail"),
    (f"{STUDY}/thumbnail", views.Thumbnail, "study-thumbnail"),
]

urlpatterns = []
for pattern, view, name in _routes:
    urlpatterns.append(re_path(rf"^{pattern}/?$", view.as_view(), name=name))
    urlpatterns.append(
        re_path(rf"^projects/(?P<project>[0-9]+)/{pattern}/?$", view.as_view(), name=f"project-{name}")
    )
