"""Tests: real PostgreSQL and Redis (embedded under .portal/test unless configured), fast hashing.

The test session (conftest.py) starts the embedded servers; worker and web-server processes that
tests launch import this module too and find the same servers through the same state directory.
"""

from portal.embedded import load_config

from .base import *  # noqa: F403
from .base import PORTAL_STATE_DIR, database_settings, env, redis_dependent_settings

DEBUG = False
SECRET_KEY = "test-only-key"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

_embedded = load_config(PORTAL_STATE_DIR / "test")
DATABASE_URL = env.str("DATABASE_URL", default=_embedded.database_url)
REDIS_URL = env.str("REDIS_URL", default=_embedded.redis_url)
DATABASES = database_settings(DATABASE_URL)
DATABASES["default"]["CONN_MAX_AGE"] = 0
# Worker and server processes started by tests use the very database pytest created.
DATABASES["default"]["NAME"] = env.str("PORTAL_TEST_DATABASE_NAME", default="portal_test")
DATABASES["default"]["TEST"] = {"NAME": DATABASES["default"]["NAME"]}
globals().update(redis_dependent_settings(REDIS_URL))
# Local identity-provider clients (tests, tools on this machine) use plain-http loopback URLs.
OAUTH2_PROVIDER["ALLOWED_REDIRECT_URI_SCHEMES"] = ["http", "https"]

PORTAL_DATA_DIR = Path(env.str("PORTAL_DATA_DIR", default=str(PORTAL_STATE_DIR / "test" / "data")))
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PORTAL_WORKER_HEARTBEAT_INTERVAL = 1
PORTAL_WORKER_HEARTBEAT_MAX_AGE = 4
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
