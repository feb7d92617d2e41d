"""Development: DEBUG on, embedded PostgreSQL/Redis unless DATABASE_URL/REDIS_URL are set.

The embedded servers are started by `python -m portal.devstack` (the README's run command);
this module only reads their ports and passwords.
"""

from portal.embedded import load_config

from .base import *  # noqa: F403
from .base import PORTAL_STATE_DIR, database_settings, env, redis_dependent_settings

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-key-do-not-use-in-production")

_embedded = load_config(PORTAL_STATE_DIR / "dev")
DATABASE_URL = env.str("DATABASE_URL", default=_embedded.database_url)
REDIS_URL = env.str("REDIS_URL", default=_embedded.redis_url)
DATABASES = database_settings(DATABASE_URL)
globals().update(redis_dependent_settings(REDIS_URL))
# Local identity-provider clients (tests, tools on this machine) use plain-http loopback URLs.
OAUTH2_PROVIDER["ALLOWED_REDIRECT_URI_SCHEMES"] = ["http", "https"]

WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
