"""Pages of the metadata app (namespace `metadata`), gathered from the modules that serve them."""

from metadata.web import catalogue, entities, projects, sheet, transfer

app_name = "metadata"

urlpatterns = [
    *projects.urlpatterns,
    *entities.urlpatterns,
    *sheet.urlpatterns,
    *transfer.urlpatterns,
    *catalogue.urlpatterns,
]
