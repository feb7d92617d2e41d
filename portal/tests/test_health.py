"""Liveness and readiness probes."""

import pytest


def test_healthz_answers_without_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_json_and_names_each_check(client):
    response = client.get("/readyz")
    body = response.json()
    assert set(body["checks"]) == {"database", "redis", "workers"}
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True
