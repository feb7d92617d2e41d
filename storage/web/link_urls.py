"""Pages of upload links (namespace `storage-links`): managing them, and the page a link opens."""

from django.urls import path

from storage.web import links

app_name = "storage-links"

urlpatterns = [
    path("upload-links/", links.LinkListView.as_view(), name="link-list"),
    path("upload-links/<int:pk>/revoke/", links.LinkRevokeView.as_view(), name="link-revoke"),
    path("upload/<str:token>/", links.LinkUploadPageView.as_view(), name="link-upload"),
]
