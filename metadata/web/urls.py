"""Pages of the metadata app (namespace `metadata`), gathered from the modules that serve them."""

from metadata.web import projects, sheet, transfer

app_name = "metadata"

urlpatterns = [*projects.urlpatterns, *sheet.urlpatterns, *transfer.urlpatterns]
