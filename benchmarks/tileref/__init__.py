"""The references of the tile-serving benchmark, as a Django project of its own (no apps, no
middleware, no database), served by the same web server as the portal:

- `/bare/<level>/<x>/<y>`: the stored tile blob of the same pyramid file, nothing else;
- `/li/<level>/<x>/<y>`: large-image making the same full-resolution tile from the source file on
  the fly (its own tile cache on), encoded as JPEG at the same quality.

Run: `DJANGO_SETTINGS_MODULE=benchmarks.tileref.settings BENCH_PYRAMID=… BENCH_SOURCE=… uvicorn
benchmarks.tileref.asgi:application --workers 2`.
"""
