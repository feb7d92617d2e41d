"""Settings shared by every environment, read from environment variables (django-environ)."""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

# --- core -----------------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# Where the embedded PostgreSQL/Redis keep their state when no external servers are configured.
PORTAL_STATE_DIR = Path(env.str("PORTAL_STATE_DIR", default=str(BASE_DIR / ".portal")))
# The one directory that holds stored files (encrypted chunks, slide pyramids, DICOM).
PORTAL_DATA_DIR = Path(env.str("PORTAL_DATA_DIR", default=str(PORTAL_STATE_DIR / "data")))
PORTAL_SITE_NAME = env.str("PORTAL_SITE_NAME", default="Research Data Portal")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "oauth2_provider",
    "mozilla_django_oidc",
    "channels",
    # Our apps, in dependency order: portal <- metadata <- storage <- pathology, imaging.
    "portal",
    "metadata",
    "storage",
    "pathology",
    "imaging",
]

MIDDLEWARE = [
    "portal.middleware.HealthProbeMiddleware",
    "portal.middleware.RefuseNulCharactersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.site",
            ],
        },
    },
]

# --- database and redis -----------------------------------------------------------------------
# Set by the environment module (dev/test use the embedded servers when these are unset).
DATABASE_URL = env.str("DATABASE_URL", default="")
REDIS_URL = env.str("REDIS_URL", default="")


def database_settings(url: str) -> dict:
    """Django DATABASES from one URL, with persistent connections and health checks."""
    db = environ.Env.db_url_config(url)
    if env.bool("PORTAL_DATABASE_POOL", default=False):
        # The ASGI server runs each request on a thread of its own, so thread-bound persistent
        # connections would mean a new connection (and password handshake) per request; a pool
        # shares connections between threads. `portal/asgi.py` switches it on.
        db["CONN_MAX_AGE"] = 0
        db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": env.int("PORTAL_DATABASE_POOL_SIZE", default=20),
            "timeout": 10,
            "max_idle": 300,
        }
    else:
        db["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
        db["CONN_HEALTH_CHECKS"] = True
    return {"default": db}


def redis_dependent_settings(redis_url: str) -> dict:
    """Celery broker and Channels layer settings, both on one Redis."""
    return {
        "CELERY_BROKER_URL": redis_url,
        "CHANNEL_LAYERS": {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    # channels-redis blocks up to 5 s per read (BZPOPMIN); the read timeout must be
                    # longer, or idle websockets die (redis-py 8 defaults to 5 s).
                    "hosts": [{"address": redis_url, "socket_timeout": 30, "socket_keepalive": True}],
                    "capacity": 1000,
                    "expiry": 30,
                },
            }
        },
    }


DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "portal.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:home"
LOGOUT_REDIRECT_URL = "portal:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("PORTAL_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("PORTAL_STATIC_ROOT", default=str(PORTAL_STATE_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Bodies above this size are refused with 413 before any view parses them. Chunked uploads
# (storage app) bring their own, larger, limit on their own endpoints.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("PORTAL_MAX_REQUEST_BODY", default=2 * 1024 * 1024)

# --- authentication ------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
]

OIDC_ENABLED = env.bool("OIDC_ENABLED", default=False)
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="single sign-on")
OIDC_RP_CLIENT_ID = env.str("OIDC_RP_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = env.str("OIDC_RP_CLIENT_SECRET", default="")
OIDC_OP_AUTHORIZATION_ENDPOINT = env.str("OIDC_OP_AUTHORIZATION_ENDPOINT", default="")
OIDC_OP_TOKEN_ENDPOINT = env.str("OIDC_OP_TOKEN_ENDPOINT", default="")
OIDC_OP_USER_ENDPOINT = env.str("OIDC_OP_USER_ENDPOINT", default="")
OIDC_OP_JWKS_ENDPOINT = env.str("OIDC_OP_JWKS_ENDPOINT", default="")
OIDC_RP_SIGN_ALGO = env.str("OIDC_RP_SIGN_ALGO", default="RS256")
OIDC_RP_SCOPES = env.str("OIDC_RP_SCOPES", default="openid email profile")
# A user whose claim OIDC_STAFF_CLAIM contains one of OIDC_STAFF_VALUES becomes staff.
OIDC_STAFF_CLAIM = env.str("OIDC_STAFF_CLAIM", default="groups")
OIDC_STAFF_VALUES = env.list("OIDC_STAFF_VALUES", default=[])
OIDC_USERNAME_CLAIM = env.str("OIDC_USERNAME_CLAIM", default="preferred_username")
OIDC_USE_PKCE = True
OIDC_STORE_ID_TOKEN = False
OIDC_CREATE_USER = True
OIDC_CALLBACK_CLASS = "portal.auth.oidc.AuditedCallbackView"
OIDC_AUTHENTICATE_CLASS = "mozilla_django_oidc.views.OIDCAuthenticationRequestView"
if OIDC_ENABLED:
    AUTHENTICATION_BACKENDS.append("portal.auth.oidc.PortalOIDCBackend")

# django-oauth-toolkit: personal API tokens, and optionally the portal as an OpenID provider
# for other tools (switched on by giving it a signing key).
PORTAL_TOKEN_SCOPES = {
    "read": "Read everything you can see",
    "write": "Create, change and delete what you may change",
    "upload": "Upload files",
    "admin": "Administrative actions (staff only)",
}
PORTAL_TOKEN_MAX_DAYS = env.int("PORTAL_TOKEN_MAX_DAYS", default=365)
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "oauth2_provider.AccessToken"
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL = "oauth2_provider.RefreshToken"
OAUTH2_PROVIDER_ID_TOKEN_MODEL = "oauth2_provider.IDToken"
OAUTH2_PROVIDER_GRANT_MODEL = "oauth2_provider.Grant"
_oidc_idp_key_file = env.str("PORTAL_OIDC_IDP_KEY_FILE", default="")
OAUTH2_PROVIDER = {
    "SCOPES": {"openid": "OpenID Connect", "email": "Your e-mail address",
               "profile": "Your name", **PORTAL_TOKEN_SCOPES},
    "DEFAULT_SCOPES": ["read"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": 3600,
    "OIDC_ENABLED": bool(_oidc_idp_key_file),
    "OIDC_RSA_PRIVATE_KEY": Path(_oidc_idp_key_file).read_text() if _oidc_idp_key_file else "",
    "OAUTH2_VALIDATOR_CLASS": "portal.auth.oidc.PortalOAuth2Validator",
    "PKCE_REQUIRED": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": env.list("PORTAL_OIDC_IDP_REDIRECT_SCHEMES", default=["https"]),
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    # Follow the OAuth 2.0 Security BCP (RFC 9700) throughout; among others, store only a
    # checksum of access tokens, never the usable token, and accept tokens only in headers.
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
}

# --- REST API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.api.authentication.PortalTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["portal.api.permissions.PortalPermission"],
    "DEFAULT_PAGINATION_CLASS": "portal.api.pagination.PortalPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.api.errors.exception_handler",
    "DEFAULT_VERSIONING_CLASS": None,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Research Data Portal API",
    "DESCRIPTION": "Projects, metadata, encrypted datasets, slides and DICOM studies.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a field called "state"; each choice set gets its own name.
    "ENUM_NAME_OVERRIDES": {
        "DatasetStateEnum": "storage.models.DatasetState",
        "KeyStateEnum": "storage.models.KeyState",
        "SlideStateEnum": "pathology.models.SlideState",
        "UploadStateEnum": "storage.models.UploadState",
        "IngestStateEnum": "imaging.models.IngestState",
    },
}

# --- background jobs ------------------------------------------------------------------------
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True  # Results live on the Job row, not in a result backend.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
PORTAL_JOB_SOFT_TIME_LIMIT = env.int("PORTAL_JOB_SOFT_TIME_LIMIT", default=6 * 3600)
PORTAL_JOB_TIME_LIMIT = env.int("PORTAL_JOB_TIME_LIMIT", default=6 * 3600 + 300)
# Periodic work, run by one `celery beat` process: an integrity scrub of the data directory every
# PORTAL_SCRUB_INTERVAL_HOURS (0 switches it off), read at most PORTAL_SCRUB_RATE_LIMIT_MB_S MiB/s
# (0: unlimited) so it does not starve uploads and tile reads; expired sessions are cleared daily.
PORTAL_SCRUB_INTERVAL_HOURS = env.float("PORTAL_SCRUB_INTERVAL_HOURS", default=24 * 7)
PORTAL_SCRUB_RATE_LIMIT_MB_S = env.float("PORTAL_SCRUB_RATE_LIMIT_MB_S", default=200)
CELERY_BEAT_SCHEDULE = {
    "clear-expired-sessions": {"task": "portal.clear_expired_sessions", "schedule": 24 * 3600.0},
    "fail-orphaned-jobs": {"task": "portal.fail_orphaned_jobs", "schedule": 60.0},
}
if PORTAL_SCRUB_INTERVAL_HOURS > 0:
    CELERY_BEAT_SCHEDULE["integrity-scrub"] = {
        "task": "portal.start_scheduled_scrub", "schedule": PORTAL_SCRUB_INTERVAL_HOURS * 3600,
    }
# Datasets whose time in the recycle bin (PORTAL_STORAGE_RETENTION_DAYS) is over are purged daily.
CELERY_BEAT_SCHEDULE["purge-expired-datasets"] = {
    "task": "storage.purge_expired_datasets", "schedule": 24 * 3600.0,
}
CELERY_BEAT_SCHEDULE["purge-expired-uploads"] = {
    "task": "storage.purge_expired_upload_sessions", "schedule": 6 * 3600.0,
}
# /readyz wants a worker heartbeat no older than this many seconds.
PORTAL_WORKER_HEARTBEAT_MAX_AGE = env.int("PORTAL_WORKER_HEARTBEAT_MAX_AGE", default=30)
PORTAL_WORKER_HEARTBEAT_INTERVAL = env.int("PORTAL_WORKER_HEARTBEAT_INTERVAL", default=5)

# --- encrypted storage ----------------------------------------------------------------------------
STORAGE_CHUNK_SIZE = env.int("PORTAL_STORAGE_CHUNK_SIZE", default=2 * 1024 * 1024)
STORAGE_MAX_CHUNK_SIZE = env.int("PORTAL_STORAGE_MAX_CHUNK_SIZE", default=16 * 1024 * 1024)
STORAGE_MAX_DATASET_SIZE = env.int("PORTAL_STORAGE_MAX_DATASET_SIZE", default=2**40)
STORAGE_KEYS_NEED_ACTIVATION = env.bool("PORTAL_STORAGE_KEY_ACTIVATION", default=True)
STORAGE_UPLOAD_KEY_TTL = env.int("PORTAL_STORAGE_UPLOAD_KEY_TTL", default=7 * 24 * 3600)
STORAGE_RETENTION_DAYS = env.int("PORTAL_STORAGE_RETENTION_DAYS", default=30)
# Plain upload sessions (slides, DICOM) can be resumed for this many days, then they are removed.
STORAGE_UPLOAD_SESSION_DAYS = env.int("PORTAL_UPLOAD_SESSION_DAYS", default=7)
# Re-key and scrub jobs get the data key sealed for this many seconds (a retry after that needs
# the key again); after a re-key's switch the old files stay this many seconds for downloads
# that began before it.
STORAGE_JOB_KEY_TTL = env.int("PORTAL_STORAGE_JOB_KEY_TTL", default=2 * 24 * 3600)
STORAGE_REKEY_GRACE_SECONDS = env.int("PORTAL_STORAGE_REKEY_GRACE_SECONDS", default=60)
# Upload chunks are taken in front of Django (storage/chunkserver.py), which keeps who sent them
# (token or session) and the upload's details this long: a revoked token stops within it.
STORAGE_CHUNK_AUTH_CACHE_SECONDS = env.float("PORTAL_STORAGE_CHUNK_AUTH_SECONDS", default=5.0)
# Chunk files move between the servers' buffers and the disk directly (O_DIRECT), not through the
# page cache, where the file system allows it (storage/services/chunkstore.py).
STORAGE_DIRECT_IO = env.bool("PORTAL_STORAGE_DIRECT_IO", default=True)
# Seals upload keys and keys handed to workers; derived from SECRET_KEY when empty.
PORTAL_SEALING_KEY = env.str("PORTAL_SEALING_KEY", default="")
# Request bodies up to this size stay in memory: a plaintext chunk must never spool to a temp file.
FILE_UPLOAD_MAX_MEMORY_SIZE = max(2_621_440, STORAGE_MAX_CHUNK_SIZE + 1024 * 1024)

# --- whole-slide images ---------------------------------------------------------------------------
# Files dropped into PORTAL_INGRESS_DIR/<project id>/ are picked up once they stop growing.
PORTAL_INGRESS_DIR = Path(env.str("PORTAL_INGRESS_DIR", default=str(PORTAL_STATE_DIR / "ingress")))
PATHOLOGY_TILE_SIZE = env.int("PORTAL_SLIDE_TILE_SIZE", default=512)
PATHOLOGY_TILE_QUALITY = env.int("PORTAL_SLIDE_TILE_QUALITY", default=90)
PATHOLOGY_MAX_SIDE = env.int("PORTAL_SLIDE_MAX_SIDE", default=1_000_000)
PATHOLOGY_WORKERS = env.int("PORTAL_SLIDE_WORKERS", default=0)  # threads per conversion; 0: one per core
PATHOLOGY_MAX_SLIDE_SIZE = env.int("PORTAL_SLIDE_MAX_SIZE", default=2**40)
PATHOLOGY_INGRESS_SETTLE_SECONDS = env.int("PORTAL_INGRESS_SETTLE_SECONDS", default=30)
# Tile requests keep who asked and whether they may see the slide for this many seconds.
PATHOLOGY_TILE_CACHE_SECONDS = env.int("PORTAL_TILE_CACHE_SECONDS", default=10)
CELERY_BEAT_SCHEDULE["scan-ingress"] = {
    "task": "pathology.scan_ingress", "schedule": max(5.0, PATHOLOGY_INGRESS_SETTLE_SECONDS / 3),
}

# --- DICOM ----------------------------------------------------------------------------------------
# An archive may unpack to at most this many bytes in all (archive bombs are refused earlier).
IMAGING_MAX_UNPACKED_BYTES = env.int("PORTAL_DICOM_MAX_UNPACKED", default=64 * 2**30)
# The network receiver (manage.py dicom_receiver): where it listens, its AE title, and which
# called AE titles go to which project ("CT_LAB:3,MRI:7"; PROJECT<id> always works).
IMAGING_DICOM_HOST = env.str("PORTAL_DICOM_HOST", default="0.0.0.0")  # noqa: S104 - a server
IMAGING_DICOM_PORT = env.int("PORTAL_DICOM_PORT", default=11112)
IMAGING_AE_TITLE = env.str("PORTAL_DICOM_AE_TITLE", default="PORTAL")
IMAGING_AE_ROUTES = env.str("PORTAL_DICOM_AE_ROUTES", default="")
# An OHIF viewer configured against /dicomweb/ (deploy/ohif/): study pages link to it, "{study}"
# standing for the Study Instance UID.
IMAGING_OHIF_URL = env.str("PORTAL_OHIF_URL", default="")

# --- logging ------------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}
