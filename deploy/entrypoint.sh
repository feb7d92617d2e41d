#!/bin/sh
# Container entrypoint: the first argument picks the role (see docs/operations.md).
#   web        ASGI server (uvicorn) for pages, API and websockets on $PORTAL_PORT
#   worker     Celery worker for the queues in $PORTAL_WORKER_QUEUES
#   beat       Celery beat (periodic jobs); run exactly one
#   migrate    apply database migrations, then exit
#   manage     any manage.py command, e.g. `manage createsuperuser`
set -eu

role="${1:-web}"
[ "$#" -gt 0 ] && shift

case "$role" in
  web)
    exec python -m uvicorn portal.asgi:application \
      --http portal.httpserver:HttpProtocol \
      --host 0.0.0.0 --port "${PORTAL_PORT:-8000}" \
      --workers "${PORTAL_WEB_WORKERS:-2}" \
      --proxy-headers --forwarded-allow-ips "${PORTAL_FORWARDED_ALLOW_IPS:-*}" \
      --lifespan off --no-server-header "$@"
    ;;
  worker)
    exec python -m celery -A portal worker \
      -Q "${PORTAL_WORKER_QUEUES:-default,tiles,crypto}" \
      --concurrency "${PORTAL_WORKER_CONCURRENCY:-2}" \
      --hostname "${PORTAL_WORKER_NAME:-worker}@%h" \
      --loglevel "${DJANGO_LOG_LEVEL:-INFO}" "$@"
    ;;
  beat)
    exec python -m celery -A portal beat \
      --schedule "${PORTAL_STATE_DIR:-/var/lib/portal}/celerybeat-schedule" \
      --loglevel "${DJANGO_LOG_LEVEL:-INFO}" "$@"
    ;;
  migrate)
    exec python manage.py migrate --noinput "$@"
    ;;
  manage)
    exec python manage.py "$@"
    ;;
  *)
    echo "unknown role '$role': use web, worker, beat, migrate or manage" >&2
    exit 64
    ;;
esac
