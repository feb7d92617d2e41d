"""Upload chunks of encrypted datasets taken in front of Django: the hot path of uploads.

A 2 MiB chunk costs about 2 ms of hashing and encryption, and going through Django's middleware,
REST framework and the token and dataset lookups used to cost far more than that. `ChunkServer`
wraps the ASGI application and answers `PUT /api/v1/datasets/<mnemonic>/chunks/<index>/` itself;
everything else – a key supplied in `X-Dataset-Key`, a body larger than any chunk, a request it
cannot place – passes through to the ordinary view (`storage.api.views.DatasetViewSet.put_chunk`),
which stays the reference (and the one the test client and the schema see). The work itself is
the same service function:

- who asks: an API token (`write` scope) or the browser's session (with Django's own CSRF check
  of every request), resolved as the API resolves them, kept for
  `STORAGE_CHUNK_AUTH_CACHE_SECONDS` (a revoked token or ended session stops within that time);
- the dataset's upload details (sizes, sealed key), once the user's write grant on it is seen,
  kept as long;
- the body received into a kept buffer, so no chunk-sized object is made per request (a fresh
  2 MiB object costs a page fault per 4 KiB of it; on two cores the server's side of an upload
  went from about 520 to 590 MB/s without them). Under the portal's HTTP protocol
  (`portal.httpserver`) the body is claimed once the request's head is read and goes from the
  socket straight into that buffer (`claim_chunk_body`); elsewhere it is copied in from
  `receive()`;
- `storage.services.uploads.put_chunk` in a thread: hash checked, encrypted into the thread's
  kept buffer, and – under a share lock of the dataset that checks the write grant again, in the
  same query – written and recorded.

A request it cannot place (an unknown token, a dataset the user may not write) is handed to Django
with the body already read, so answers and their status codes are the API's own.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections

from portal import asgi_auth, httpserver
from storage.services import chunkstore

CHUNK_PATH = re.compile(r"^/api/v1/datasets/(?P<mnemonic>[a-z]+_[a-z]+_[a-z]+)/chunks/(?P<index>\d{1,9})/$")
# Chunks are hashed, encrypted and written off the event loop, two at once (hashing, AES-GCM and
# file writes release the GIL; more threads only fought over it, measured on two cores).
_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="chunk-put")
# Each of those threads keeps its buffer for ciphertext (`ChunkBuffers`).
_per_thread = threading.local()


def _seconds() -> float:
    return float(settings.STORAGE_CHUNK_AUTH_CACHE_SECONDS)


# ("token" | "session", secret) → its user (None: not a valid write token or signed-in session)
_users = asgi_auth.ShortCache(_seconds)
# (user id, mnemonic) → the uploading dataset the user may write (None: not one)
_datasets = asgi_auth.ShortCache(_seconds)


def clear_caches() -> None:
    _users.clear()
    _datasets.clear()


# Request bodies are received into kept buffers: taken and given back on the event loop, or by
# the storing thread once done when the request was cancelled meanwhile.
_bodies = chunkstore.KeptBuffers(keep_bytes=16 * 1024 * 1024)


def _with_database(func, *args):
    """Run `func` as Django runs a request: connections checked before and given back after."""
    close_old_connections()
    try:
        return func(*args)
    finally:
        close_old_connections()


async def _off_loop(func, *args):
    return await asyncio.get_running_loop().run_in_executor(_executor, _with_database, func, *args)


def load_user(kind: str, secret: str):
    if kind == "token":
        return asgi_auth.user_for_token(secret, ["write"])
    return asgi_auth.user_for_session(secret)


def csrf_passes(scope) -> bool:
    """Django's own CSRF check of a session's request (as REST framework runs it): the token in
    `X-CSRFToken` against the cookie, and the origin or referrer where Django checks them."""
    import io

    from django.core.handlers.asgi import ASGIRequest
    from django.middleware.csrf import CsrfViewMiddleware

    try:
        request = ASGIRequest(scope, io.BytesIO())
        check = CsrfViewMiddleware(lambda request: None)
        check.process_request(request)
        return check.process_view(request, None, (), {}) is None
    except Exception:  # noqa: BLE001 - a bad host or header: the view answers it
        return False


def load_dataset(user, mnemonic: str):
    """The dataset if it is uploading and `user` holds a write grant on it (None otherwise: the
    API's view answers then, so nothing about it is told to others first)."""
    from storage.models import Dataset, DatasetState, GrantLevel

    return Dataset.objects.filter(
        mnemonic=mnemonic, state=DatasetState.UPLOADING, grants__user=user, grants__level=GrantLevel.WRITE
    ).first()


def store(dataset, index: int, data, sha256: str, user) -> tuple[int, dict]:
    """(status, JSON body) of putting one chunk: the view's answer for the same request."""
    from storage.api.serializers import chunk_data
    from storage.services import uploads
    from storage.services.errors import KeyNeededError, NoAccessError, StorageError

    buffers = getattr(_per_thread, "buffers", None)
    if buffers is None:
        buffers = _per_thread.buffers = chunkstore.ChunkBuffers()
    try:
        chunk = uploads.put_chunk(dataset, index, data, sha256, writer=user, buffers=buffers)
    except NoAccessError:
        raise  # the view tells a stranger (404) from a reader (403)
    except KeyNeededError as exc:
        _datasets.forget((user.pk, dataset.mnemonic))  # a key supplied through the view seals it anew
        return exc.status, {"detail": exc.message, "code": exc.code}
    except StorageError as exc:
        return exc.status, {"detail": exc.message, "code": exc.code}
    return 200, chunk_data(chunk)


def _header(scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            return value
    return None


def claim_chunk_body(scope, length: int) -> httpserver.BodyClaim | None:
    """The portal's HTTP protocol asks this once a request's head is read: a chunk that this server
    takes is received from the socket straight into a kept buffer (`portal.httpserver`)."""
    if scope["method"] == "PUT" and CHUNK_PATH.match(scope["path"]) and ChunkServer._ours(scope):
        return httpserver.BodyClaim(_bodies.take(length), length, _bodies.give)
    return None


class ChunkServer:
    """ASGI wrapper: token-authenticated chunk PUTs are taken here, everything else goes to `app`."""

    def __init__(self, app):
        self.app = app
        # Only where this server reads them: a claimed body is never offered to `receive()`.
        httpserver.claim_bodies(claim_chunk_body)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "PUT":
            match = CHUNK_PATH.match(scope["path"])
            if match and self._ours(scope):
                return await self.serve(scope, receive, send, match)
        return await self.app(scope, receive, send)

    @staticmethod
    def _ours(scope) -> bool:
        if asgi_auth.credentials(scope) is None or _header(scope, b"x-dataset-key") is not None:
            return False
        length = _header(scope, b"content-length") or b""
        return length.isdigit() and int(length) <= settings.STORAGE_MAX_CHUNK_SIZE

    async def serve(self, scope, receive, send, match) -> None:
        length = int(_header(scope, b"content-length"))  # checked by `_ours`
        claim = scope.get("extensions", {}).get(httpserver.EXTENSION)
        buffer = _bodies.take(length) if claim is None else claim.buffer

        def give_back(*_) -> None:
            if claim is None:
                _bodies.give(buffer)
            else:
                claim.release()

        thread_holds = False  # the thread storing the chunk still reads the buffer
        try:
            if claim is not None:  # received by the HTTP protocol straight into the buffer
                if not await claim.wait():
                    return  # the client left before the whole body arrived
                body = claim.body
            else:
                body = memoryview(buffer)[:length]
                received = 0
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    piece = message.get("body", b"")
                    if received + len(piece) > length:  # the HTTP server lets no such body through
                        too_long = "The body is longer than its Content-Length."
                        return await _answer(send, 400, {"detail": too_long, "code": "invalid"})
                    body[received : received + len(piece)] = piece
                    received += len(piece)
                    if not message.get("more_body"):
                        break
                body = body[:received]

            async def replay():
                """Django's view answers: it reads the same body."""
                sent = False
                content = bytes(body)

                async def again():
                    nonlocal sent
                    if not sent:
                        sent = True
                        return {"type": "http.request", "body": content, "more_body": False}
                    return await receive()

                return await self.app(scope, again, send)

            kind, secret = asgi_auth.credentials(scope)
            if kind == "session" and not csrf_passes(scope):
                return await replay()
            user = await _users.get((kind, secret), lambda: _off_loop(load_user, kind, secret))
            if user is None:
                return await replay()
            mnemonic = match["mnemonic"]
            dataset = await _datasets.get(
                (user.pk, mnemonic), lambda: _off_loop(load_dataset, user, mnemonic)
            )
            if dataset is None:
                return await replay()
            sha256 = (_header(scope, b"x-content-sha256") or b"").decode("latin-1")
            from storage.services.errors import NoAccessError

            work = _executor.submit(_with_database, store, dataset, int(match["index"]), body, sha256, user)
            try:
                status, answer = await asyncio.wrap_future(work)
            except NoAccessError:
                return await replay()
            except BaseException:
                if not work.done():  # cancelled: the buffer goes back once the thread is done
                    thread_holds = True
                    work.add_done_callback(give_back)
                raise
            return await _answer(send, status, answer)
        finally:
            if not thread_holds:
                give_back()


async def _answer(send, status: int, answer: dict) -> None:
    payload = json.dumps(answer).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"private, no-store"),
        (b"vary", b"Accept, Authorization"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
