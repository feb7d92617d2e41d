"""Fixtures for the core app's tests: users in each role and API clients."""

import pytest
from rest_framework.test import APIClient

from portal.models import User


@pytest.fixture
def make_user(db):
    def make(username: str, *, staff: bool = False, password: str = "pw-for-tests-1") -> User:
        user = User.objects.create_user(username=username, password=password,
                                        email=f"{username}@example.org", is_staff=staff)
        return user
    return make


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def stranger(make_user):
    return make_user("stranger")


@pytest.fixture
def admin_user(make_user):
    return make_user("boss", staff=True)


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def client_for():
    def make(user) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client
    return make
