"""Reference task for the benchmarks: the least a Celery round trip can cost (no Job row)."""

import redis
from celery import shared_task
from django.conf import settings


@shared_task(name="benchmarks.touch", ignore_result=True)
def touch(key: str) -> None:
    redis.Redis.from_url(settings.REDIS_URL).set(key, 1, ex=60)
