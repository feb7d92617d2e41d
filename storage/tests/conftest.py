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
