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


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_for_any_host(client, path):
    """Kubernetes probes a pod by its IP, which is not an allowed host; the probes still answer."""
    response = client.get(path, HTTP_HOST="10.42.0.17:8000")
    assert response.status_code in (200, 503)
    assert "status" in response.json()
    assert client.get("/", HTTP_HOST="10.42.0.17:8000").status_code == 400


def test_probes_refuse_other_methods(client):
    assert client.post("/healthz").status_code == 405
