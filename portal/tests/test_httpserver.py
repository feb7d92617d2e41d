"""The web server's HTTP protocol (`portal/httpserver.py`) under a real uvicorn server, on both of
its event loops: claimed bodies arrive whole in their buffers, everything else is uvicorn's own
behaviour (bodies through `receive()`, keep-alive, pipelining, `Expect: 100-continue`, websockets),
and a client that leaves mid-body neither hangs the application nor has its buffer reused early."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time

import pytest

from conftest import uvicorn_in_thread
from portal import httpserver

BIG = os.urandom(2 * 1024 * 1024 + 16)


class Recorder:
    """A claimer for paths under /claim/ and an ASGI app answering with what it got."""

    def __init__(self):
        self.given_back: list[bytearray] = []
        self.claims: list[httpserver.BodyClaim] = []
        self.ended: list[tuple[str, bool | None]] = []  # (path, whole body?) once the app is done
        self.fail = False

    def claimer(self, scope, length):
        if not scope["path"].startswith("/claim/"):
            return None
        if self.fail:
            raise RuntimeError("a claimer that breaks")
        claim = httpserver.BodyClaim(bytearray(length), length, self.given_back.append)
        self.claims.append(claim)
        return claim

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return
        if scope["type"] == "websocket":
            await receive()  # connect
            await send({"type": "websocket.accept"})
            message = await receive()
            await send({"type": "websocket.send", "text": "echo:" + message.get("text", "")})
            await send({"type": "websocket.close"})
            return
        claim = scope.get("extensions", {}).get(httpserver.EXTENSION)
        whole = None
        try:
            if claim is not None:
                whole = await claim.wait()
                if not whole:
                    return
                body = bytes(claim.body)
            else:
                body = b""
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    if not message.get("more_body"):
                        break
            answer = json.dumps({
                "claimed": claim is not None, "size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
            }).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode()),
            ]})
            await send({"type": "http.response.body", "body": answer})
        finally:
            if claim is not None:
                claim.release()
            self.ended.append((scope["path"], whole))


@pytest.fixture(params=["asyncio", "uvloop"])
def server(request, monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(httpserver, "_claimers", [recorder.claimer])
    with uvicorn_in_thread(recorder, loop=request.param) as port:
        yield recorder, port


def request(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n"
    for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
        if value is not None:
            head += f"{name}: {value}\r\n"
    return head.encode() + b"\r\n" + body


def read_answer(stream) -> tuple[int, dict]:
    status = int(stream.readline().split()[1])
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return status, json.loads(stream.read(length)) if length else {}


def connect(port: int) -> tuple[socket.socket, object]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    return sock, sock.makefile("rb")


def expect(answer, body: bytes, claimed: bool) -> None:
    status, data = answer
    assert status == 200
    assert data == {"claimed": claimed, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_claimed_bodies_arrive_whole_in_their_buffer_and_others_through_receive(server, monkeypatch):
    recorder, port = server
    parsed = []  # the pieces of claimed bodies that went through the HTTP parser
    take = httpserver.BodyClaim._take

    def counting(claim, piece):
        parsed.append(len(piece))
        take(claim, piece)

    monkeypatch.setattr(httpserver.BodyClaim, "_take", counting)
    sock, stream = connect(port)
    with sock:
        small = b"x" * 100  # arrives with the head: the parser hands it over
        for path, body, claimed in [
            ("/claim/big", BIG, True), ("/other", BIG, False), ("/claim/small", small, True),
            ("/claim/big-again", BIG, True), ("/other-small", small, False),
        ]:
            sock.sendall(request("PUT", path, body))
            expect(read_answer(stream), body, claimed)
    assert [claim.received for claim in recorder.claims] == [len(BIG), len(small), len(BIG)]
    # The big bodies went from the socket into their buffers, past the parser (on both loops).
    assert sum(parsed) < len(BIG) // 2 + len(small)
    # Each buffer went back once the app released it and the body was complete.
    assert len(recorder.given_back) == 3
    assert bytes(recorder.given_back[0][: len(BIG)]) == BIG


def test_a_body_sent_in_small_pieces_and_pipelined_requests(server):
    recorder, port = server
    sock, stream = connect(port)
    with sock:
        data = request("PUT", "/claim/pieces", BIG)
        for start in range(0, len(data), 7919):
            sock.sendall(data[start : start + 7919])
        expect(read_answer(stream), BIG, True)
        # Three requests in one write: the second's body must not swallow the third's head.
        body = os.urandom(300_000)
        three = request("PUT", "/claim/a", body) + request("PUT", "/claim/b", BIG)
        sock.sendall(three + request("PUT", "/other", body))
        expect(read_answer(stream), body, True)
        expect(read_answer(stream), BIG, True)
        expect(read_answer(stream), body, False)


def test_what_is_not_claimed(server):
    recorder, port = server
    sock, stream = connect(port)
    with sock:
        # Chunked transfer encoding has no length up front: uvicorn reads it.
        chunked = (
            b"PUT /claim/chunked HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        sock.sendall(chunked)
        expect(read_answer(stream), b"hello", False)
        # An empty body: nothing to claim.
        sock.sendall(request("PUT", "/claim/empty", b""))
        expect(read_answer(stream), b"", False)
        recorder.fail = True  # a claimer that raises: logged, and the body read as usual
        sock.sendall(request("PUT", "/claim/broken", BIG))
        expect(read_answer(stream), BIG, False)
    assert recorder.claims == []


def test_expect_100_continue_is_answered_before_the_body(server):
    recorder, port = server
    sock, stream = connect(port)
    with sock:
        sock.sendall(request("PUT", "/claim/continue", headers={"Content-Length": str(len(BIG)),
                                                                "Expect": "100-continue"}))
        assert stream.readline().startswith(b"HTTP/1.1 100")
        assert stream.readline() == b"\r\n"
        sock.sendall(BIG)
        expect(read_answer(stream), BIG, True)


def test_a_client_leaving_mid_body(server):
    recorder, port = server
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(request("PUT", "/claim/left", BIG)[: 1024 * 1024])
    deadline = time.monotonic() + 10
    while not (recorder.claims and recorder.claims[0].received > 500_000):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sock.close()
    while not recorder.ended:
        assert time.monotonic() < deadline, "the application still waits for the body"
        time.sleep(0.01)
    assert recorder.ended == [("/claim/left", False)]
    assert len(recorder.given_back) == 1  # released, and nothing more will be written into it
    # The server goes on serving.
    sock, stream = connect(port)
    with sock:
        sock.sendall(request("PUT", "/claim/after", BIG))
        expect(read_answer(stream), BIG, True)


def test_a_buffer_goes_back_only_when_released_and_complete():
    given = []
    claim = httpserver.BodyClaim(bytearray(10), 10, given.append)
    claim.release()
    assert given == []  # the body is still arriving: nothing may take the buffer yet
    claim._take(b"0123456789")
    claim._finish(True)
    assert len(given) == 1
    claim._finish(False)
    assert len(given) == 1

    later = httpserver.BodyClaim(bytearray(4), 4, given.append)
    later._finish(False)
    assert asyncio.run(later.wait()) is False
    assert len(given) == 1
    later.release()
    assert len(given) == 2


def test_websockets_still_upgrade(server):
    import base64

    recorder, port = server
    sock, stream = connect(port)
    with sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert stream.readline().startswith(b"HTTP/1.1 101")
        while stream.readline() != b"\r\n":
            pass
        payload = b"hi"
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        first, second = stream.read(2)
        assert first == 0x81
        assert stream.read(second & 0x7F) == b"echo:hi"
