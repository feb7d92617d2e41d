"""Settings of the tile-serving references: nothing but the URLconf."""

SECRET_KEY = "tile-reference-benchmark-only"  # serves no secrets, no sessions
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "benchmarks.tileref.urls"
DATABASES: dict = {}
USE_TZ = True
