"""Keys for the storage tests: 4096-bit RSA generation is slow, so each key is made once a session."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from storage import crypto


@pytest.fixture(scope="session")
def root_key_a() -> rsa.RSAPrivateKey:
    return crypto.generate_private_key()


@pytest.fixture(scope="session")
def root_key_b() -> rsa.RSAPrivateKey:
    return crypto.generate_private_key()


@pytest.fixture(scope="session")
def user_key() -> rsa.RSAPrivateKey:
    """A 4096-bit key that is not a root key."""
    return crypto.generate_private_key()


@pytest.fixture(scope="session")
def small_rsa_key() -> rsa.RSAPrivateKey:
    """A 2048-bit key, which the portal refuses."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def cheap_encrypted_pem():
    """An encrypted PKCS#1 PEM, fast to open: encrypted PKCS#8 costs about a second per load."""

    def make(key: rsa.RSAPrivateKey, password: bytes) -> str:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(password),
        ).decode()

    return make


# --- people with keys, for the service and API tests ----------------------------------------------

from metadata.tests.conftest import api, people, web  # noqa: E402, F401 - the same roles everywhere

ROLES_WITH_KEYS = ("stranger", "reader", "writer", "owner", "admin")


@pytest.fixture(scope="session")
def private_keys() -> dict[str, rsa.RSAPrivateKey]:
    """One RSA-4096 private key per role (made once a session) and one root key."""
    return {role: crypto.generate_private_key() for role in (*ROLES_WITH_KEYS, "root")}


@pytest.fixture
def keyed(people, private_keys, settings, tmp_path):  # noqa: F811 - the imported fixture
    """Every role's user has an active key; one root key is configured; a fresh data directory."""
    from storage.models import KeyState, RootKey, UserKey

    for role in ROLES_WITH_KEYS:
        public = private_keys[role].public_key()
        UserKey.objects.create(
            user=people[role],
            name=f"{role}'s laptop",
            public_key=crypto.public_key_pem(public),
            fingerprint=crypto.public_key_fingerprint(public),
            state=KeyState.ACTIVE,
        )
    root = private_keys["root"].public_key()
    RootKey.objects.create(
        name="operators",
        public_key=crypto.public_key_pem(root),
        fingerprint=crypto.public_key_fingerprint(root),
    )
    settings.PORTAL_DATA_DIR = tmp_path / "data"
    return people


@pytest.fixture
def team_dataset(keyed, api, private_keys):  # noqa: F811 - the imported fixture
    """`team_dataset(data)`: the owner uploads `data` and shares it with the writer (write) and
    the reader (read); returns the dataset and its data key."""
    from storage.models import Dataset
    from storage.tests.helpers import unwrap, upload

    def make(data: bytes):
        owner = api("owner")
        mnemonic = upload(owner, data)
        key = unwrap(owner, mnemonic, private_keys["owner"])
        for role, level in (("writer", "write"), ("reader", "read")):
            response = owner.post(
                f"/api/v1/datasets/{mnemonic}/grants/",
                {"user": role, "level": level, "key": key.hex()},
                format="json",
            )
            assert response.status_code == 201, response.content
        return Dataset.objects.get(mnemonic=mnemonic), key

    return make
