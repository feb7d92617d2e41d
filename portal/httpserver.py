"""The web server's HTTP protocol: uvicorn's own (httptools), with claimed request bodies received
straight from the socket into the application's buffer.

uvicorn hands a request body to the application in pieces: each read from the socket becomes a
bytes object, is appended to a bytearray, copied once more into the bytes of an `http.request`
message, and the application wakes once per piece (about 64 KiB) to copy it where it wants it.
For a 2 MiB upload chunk that is three copies of every byte and some thirty trips through the event
loop, about a third of the web process's work per chunk on two cores.

With this protocol (`uvicorn --http portal.httpserver:HttpProtocol`, as every launcher of the
portal starts it), an application may claim the body of a request once its headers are read:
`claim_bodies(claimer)` registers a function `(scope, length) -> BodyClaim | None`, asked for every
request with a `Content-Length` (and no `Transfer-Encoding`). A claimed body is read from the socket
into the claim's buffer (no other copy), and the application, which finds the claim in
`scope["extensions"][EXTENSION]`, awaits `claim.wait()` once instead of calling `receive()` per
piece. Everything else – requests not claimed, websockets, keep-alive, pipelining, `Expect:
100-continue`, errors – is uvicorn's own code. Without this protocol (another ASGI server, the test
client) there is no claim in the scope and the application reads the body with `receive()` as
usual, so the claim is only ever a faster way to the same bytes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# The key of a claim in the request scope's `extensions`.
EXTENSION = "portal.body_claim"
# The import string to give uvicorn (`--http`).
PROTOCOL = "portal.httpserver:HttpProtocol"
# Reads outside claimed bodies go into one buffer of this size (the event loop reads one socket
# at a time); the bytes are handed to the HTTP parser from there.
READ_SIZE = 256 * 1024

_claimers: list[Callable[[dict, int], BodyClaim | None]] = []
# One read buffer per thread (an event loop reads one socket at a time, and its protocol hands
# the bytes on before the next read).
_scratch = threading.local()
logger = logging.getLogger(__name__)


def claim_bodies(claimer: Callable[[dict, int], BodyClaim | None]):
    """Register `claimer(scope, length)`, asked (on the event loop, so it must be quick) whether to
    receive a request's body of `length` bytes into a buffer of its own; usable as a decorator."""
    if claimer not in _claimers:
        _claimers.append(claimer)
    return claimer


class BodyClaim:
    """A request body received into `buffer` (writable, at least `length` bytes).

    `give_back(buffer)` is called once the application has released the claim and nothing writes
    into the buffer any more: when the body is complete, or the connection is lost. A buffer the
    application never releases is simply dropped."""

    def __init__(self, buffer, length: int, give_back: Callable[[object], None] | None = None) -> None:
        self.buffer = buffer
        self.length = length
        self.received = 0
        self._view = memoryview(buffer)
        self._give_back = give_back
        self._arrived: asyncio.Future | None = None
        self._outcome: bool | None = None  # True: the whole body arrived; False: it never will
        self._released = False

    @property
    def body(self) -> memoryview:
        """The body received so far (all of it once `wait()` said True)."""
        return self._view[: self.received]

    async def wait(self) -> bool:
        """True once the whole body is in the buffer; False if the connection was lost first."""
        if self._outcome is None:
            if self._arrived is None:
                self._arrived = asyncio.get_running_loop().create_future()
            await self._arrived
        return bool(self._outcome)

    def release(self) -> None:
        """The application is done with the buffer (call it exactly once, from any thread)."""
        self._released = True
        if self._outcome is not None:
            self._hand_back()

    # The protocol's side (event loop).
    def _take(self, piece: bytes) -> None:
        end = self.received + len(piece)
        self._view[self.received : end] = piece
        self.received = end

    def _space(self) -> memoryview:
        return self._view[self.received : self.length]

    def _finish(self, complete: bool) -> None:
        if self._outcome is not None:
            return
        self._outcome = complete
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(complete)
        if self._released:
            self._hand_back()

    def _hand_back(self) -> None:
        give_back, self._give_back = self._give_back, None
        if give_back is not None:
            give_back(self.buffer)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's length where it is given once by `Content-Length` and not chunked."""
    length = None
    for name, value in headers:
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name == b"transfer-encoding":
            return None
    return length


class ClaimingHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, asking the claimers at the end of each request's head and
    handing a claimed body's bytes that the parser sees to the claim (`HttpProtocol` reads the
    rest into the claim's buffer itself)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.claim: BodyClaim | None = None  # the body being received into a buffer
        self.direct = False  # the claim's remaining bytes are read from the socket into it

    def body_read_directly(self) -> None:
        """The parser saw the head only: a fresh one for the next request on this connection."""
        self.direct = False
        self.parser = httptools.HttpRequestParser(self)
        try:
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        except AttributeError:  # pragma: no cover - httptools < 0.6.3
            pass
        self._body_complete()

    def _body_complete(self) -> None:
        claim, self.claim = self.claim, None
        # As uvicorn does at the end of a body, without waking `receive()`: the application has the
        # body, and its next `receive()` waits for the response to end or the client to leave.
        self.cycle.more_body = False
        claim._finish(True)

    # Parser callbacks
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle, scope = self.cycle, self.scope
        if not _claimers or cycle is None or cycle.scope is not scope or "path" not in scope:
            return  # a websocket upgrade, or nothing started
        length = _content_length(self.headers)
        if not length:
            return
        claim = None
        for claimer in _claimers:
            try:
                claim = claimer(scope, length)
            except Exception:  # a claimer's fault must not fail the request: uvicorn reads the body
                logger.exception("claiming a request body failed")
                claim = None
            if claim is not None:
                break
        if claim is None or claim.length != length or claim.received or len(claim._view) < length:
            return
        scope.setdefault("extensions", {})[EXTENSION] = claim
        self.claim = claim
        if cycle.waiting_for_100_continue and not self.transport.is_closing():
            # The application will not call `receive()`, which sends this otherwise.
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False

    def on_body(self, body: bytes) -> None:
        if self.claim is not None:
            self.claim._take(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self.claim is not None:
            self._body_complete()
            return
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        claim, self.claim = self.claim, None
        self.direct = False
        if claim is not None:
            claim._finish(False)
        super().connection_lost(exc)


class HttpProtocol(asyncio.BufferedProtocol):
    """The protocol uvicorn is given: reads into buffers (asyncio's `BufferedProtocol`) and hands
    everything else to a `ClaimingHttpTools`. A wrapper rather than a subclass: uvloop reads into
    a protocol's buffers only when it is not an `asyncio.Protocol`, which uvicorn's is."""

    def __init__(self, *args, **kwargs) -> None:
        self.http = ClaimingHttpTools(*args, **kwargs)
        if not hasattr(_scratch, "view"):
            _scratch.view = memoryview(bytearray(READ_SIZE))
        self._scratch = _scratch.view

    def connection_made(self, transport) -> None:
        self.http.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.http.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self.http.eof_received()

    def pause_writing(self) -> None:
        self.http.pause_writing()

    def resume_writing(self) -> None:
        self.http.resume_writing()

    def get_buffer(self, sizehint: int) -> memoryview:
        http = self.http
        if http.direct:
            return http.claim._space()
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        http = self.http
        if http.direct:
            claim = http.claim
            claim.received += nbytes
            if claim.received >= claim.length:
                http.body_read_directly()
            return
        http.data_received(self._scratch[:nbytes])
        # The parser has taken the body's first bytes; the rest goes straight into the buffer.
        if http.claim is not None and http.parser is not None and not http.transport.is_closing():
            http.direct = True
