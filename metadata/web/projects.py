"""Pages: projects (built next)."""

urlpatterns: list = []
