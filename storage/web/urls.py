"""Pages of the storage app (namespace `storage`), gathered from the modules that serve them.

Upload links' pages have their own URLconf (`storage.web.link_urls`, namespace `storage-links`).
"""

from storage.web import datasets, keys

app_name = "storage"

urlpatterns = [*datasets.urlpatterns, *keys.urlpatterns]
