"""Pages: transfer (built next)."""

urlpatterns: list = []
