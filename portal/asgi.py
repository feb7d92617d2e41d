"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings.dev")
# The web server shares database connections through a pool (see `database_settings`); set only
# while the settings load, so processes started from here (and forking workers) do not inherit it.
_pool_set_here = "PORTAL_DATABASE_POOL" not in os.environ
os.environ.setdefault("PORTAL_DATABASE_POOL", "true")
try:
    django_asgi_app = get_asgi_application()
finally:
    if _pool_set_here:
        del os.environ["PORTAL_DATABASE_POOL"]

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from metadata.consumers import SheetConsumer  # noqa: E402
from pathology.tileserver import TileServer  # noqa: E402
from portal.consumers import JobProgressConsumer  # noqa: E402
from portal.ws_auth import PortalAuthMiddlewareStack, PortalOriginValidator  # noqa: E402
from storage.chunkserver import ChunkServer  # noqa: E402

websocket_urlpatterns = [
    path("ws/jobs/", JobProgressConsumer.as_asgi()),
    path("ws/metadata/projects/<int:project_pk>/", SheetConsumer.as_asgi()),
]

application = ProtocolTypeRouter({
    # Slide tiles are answered in front of Django (no middleware, no query per tile), and so are
    # upload chunks (no middleware; the dataset locked and the row written in two round trips).
    "http": TileServer(ChunkServer(django_asgi_app)),
    "websocket": PortalOriginValidator(
        PortalAuthMiddlewareStack(URLRouter(websocket_urlpatterns))
    ),
})
