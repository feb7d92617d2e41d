"""Models of the storage app: user and root keys, encrypted datasets with their chunks, wraps and
grants, and plain chunked upload sessions for other apps."""

from .datasets import Chunk, Dataset, DatasetState, Grant, GrantLevel, KeyWrap
from .keys import KeyState, RootKey, UserKey
from .links import UploadLink
from .uploads import UploadChunk, UploadSession, UploadState

__all__ = [
    "Chunk",
    "Dataset",
    "DatasetState",
    "Grant",
    "GrantLevel",
    "KeyState",
    "KeyWrap",
    "RootKey",
    "UploadChunk",
    "UploadLink",
    "UploadSession",
    "UploadState",
    "UserKey",
]
