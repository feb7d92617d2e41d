"""Models of the storage app: user and root keys, encrypted datasets with their chunks, wraps and grants."""

from .datasets import Chunk, Dataset, DatasetState, Grant, GrantLevel, KeyWrap
from .keys import KeyState, RootKey, UserKey
from .links import UploadLink

__all__ = [
    "Chunk",
    "Dataset",
    "DatasetState",
    "Grant",
    "GrantLevel",
    "KeyState",
    "KeyWrap",
    "RootKey",
    "UploadLink",
    "UserKey",
]
