"""Errors of the storage services; the API maps each to its HTTP status."""

from __future__ import annotations


class StorageError(Exception):
    """A request the storage services refuse; `status` is the HTTP status the API answers with."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status


class KeyMismatchError(StorageError):
    """A data key that is not the dataset's (its fingerprint differs)."""

    status = 403
    code = "wrong_key"


class NoAccessError(StorageError):
    status = 403
    code = "permission_denied"


class ConflictError(StorageError):
    status = 409
    code = "conflict"


class KeyNeededError(StorageError):
    """The upload's sealed key expired: a key holder must supply the data key to go on."""

    status = 409
    code = "key_needed"
