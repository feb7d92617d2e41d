"""HTTP client of the storage API, for the command-line tool (`python -m storage.cli upload ...`).

It speaks the protocol of `storage/api/views.py` over one kept-alive connection (the standard
library's `http.client`; no Django, no third-party HTTP package):

- upload: find an unfinished upload of the same file (name, size, first chunk's SHA-256) and send
  only the chunks the server lacks or holds with another hash, re-hashing the local data; skip a
  file the server already holds with the same dataset hash; supply the data key (unwrapped
  locally from `wraps/`) when the server's kept copy of it expired (409 `key_needed`);
- download: decrypt in the client (wraps, chunk table, ciphertext of each chunk; tags, hashes and
  the dataset hash checked) or let the server decrypt (`content/` with the key in a header);
  plaintext goes to a hidden partial file renamed into place only once everything verified;
- share: unwrap the key locally and post it with the grant.

Connection failures and 502/503/504 answers are retried with backoff, so an upload or download
survives a server restart; when the retries run out, running the same command again resumes.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import itertools
import json
import os
import socket
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric import rsa

from storage import crypto

API = "/api/v1"
KEY_HEADER = "X-Dataset-Key"
HASH_HEADER = "X-Content-SHA256"
READ_BLOCK = 1024 * 1024
DEFAULT_PARALLEL = 4  # chunks on their way at once


# --- errors ---------------------------------------------------------------------------------------


class ClientError(Exception):
    """A failure to report to the user: the message says what happened and what to do."""


class ApiError(ClientError):
    """The server answered with an error (`status`, the API's `code` and `detail`)."""

    def __init__(self, status: int, code: str, detail: str, errors: dict | None = None):
        self.status, self.code, self.detail, self.errors = status, code, detail, errors or {}
        extra = "; ".join(
            f"{name}: {' '.join(messages)}" for name, messages in self.errors.items() if messages
        )
        super().__init__(f"{detail} ({extra})" if extra and extra not in detail else detail)


class ServerUnreachableError(ClientError):
    """The server could not be reached (after retries)."""


class IntegrityError(ClientError):
    """Downloaded data failed a check (tag, size, chunk hash or dataset hash)."""


# --- progress -------------------------------------------------------------------------------------


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class Progress:
    """A plain-text progress bar on standard error.

    On a terminal one line is redrawn (at most five times a second); otherwise a line is printed at
    every tenth of the way, so logs stay short. `quiet` prints nothing.
    """

    WIDTH = 24

    def __init__(self, label: str, total: int, *, stream: IO[str] | None = None, quiet: bool = False):
        self.label, self.total, self.done = label, max(total, 0), 0
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._drawn = float("-inf")  # the first advance draws (monotonic time starts near 0 at boot)
        self._tenth = -1

    def advance(self, count: int, *, note: str = "") -> None:
        self.done += count
        if self.quiet:
            return
        fraction = self.done / self.total if self.total else 1.0
        if self.tty:
            now = time.monotonic()
            if now - self._drawn >= 0.2 or self.done >= self.total:
                self._drawn = now
                self._draw(fraction, note, end="")
        else:
            tenth = int(fraction * 10)
            if tenth != self._tenth:
                self._tenth = tenth
                self._draw(fraction, note, end="\n")

    def _draw(self, fraction: float, note: str, end: str) -> None:
        filled = int(fraction * self.WIDTH)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = (
            f"{self.label} [{bar}] {fraction * 100:5.1f}% {human_bytes(self.done)}/{human_bytes(self.total)}"
            f" {human_bytes(rate)}/s"
        )
        if note:
            line += f" {note}"
        prefix = "\r\x1b[2K" if self.tty else ""
        print(prefix + line, end=end, file=self.stream, flush=True)

    def finish(self) -> None:
        if self.quiet:
            return
        if self.tty:
            print(file=self.stream, flush=True)
        elif self._tenth < 10:
            self._draw(1.0 if self.done >= self.total else self.done / max(self.total, 1), "", end="\n")

    def message(self, text: str) -> None:
        if not self.quiet:
            prefix = "\r\x1b[2K" if self.tty else ""
            print(prefix + text, file=self.stream, flush=True)


class RateLimiter:
    """Keeps the average rate at or below `bytes_per_second` (None: no limit); thread-safe."""

    def __init__(self, bytes_per_second: int | None):
        self.rate = bytes_per_second
        self.started = time.monotonic()
        self.sent = 0
        self._lock = threading.Lock()

    def wait(self, count: int) -> None:
        if not self.rate:
            return
        with self._lock:
            self.sent += count
            ahead = self.sent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)


# --- HTTP -----------------------------------------------------------------------------------------

_RETRY_STATUS = {502, 503, 504}
_CONNECTION_ERRORS = (OSError, http.client.HTTPException)


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None


class Portal:
    """One server and token; requests over a kept-alive connection, retried on connection errors.

    `retries` is how many times a failed attempt is repeated (waits 1, 2, 4 … up to 30 seconds),
    so a restart of the server that takes less than about a minute goes unnoticed.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 300.0,
        retries: int = 6,
        retry_wait: float = 1.0,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ClientError(f"the server URL must start with https:// or http://, not {url!r}")
        if not token or not token.strip():
            raise ClientError(
                "no API token: set PORTAL_TOKEN or give --token (create one on your profile page)"
            )
        self.url = url.rstrip("/")
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port
        self.prefix = parsed.path.rstrip("/")
        self.token = token.strip()
        self.timeout = timeout
        self.retries = max(0, retries)
        self.retry_wait = retry_wait
        self.on_retry = on_retry
        self._connection: http.client.HTTPConnection | None = None

    # connection handling

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self.scheme == "https":
                self._connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
            else:
                self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def copy(self) -> Portal:
        """The same server and token over a connection of its own (one per thread)."""
        return Portal(
            self.url,
            self.token,
            timeout=self.timeout,
            retries=self.retries,
            retry_wait=self.retry_wait,
            on_retry=self.on_retry,
        )

    def __enter__(self) -> Portal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json",
            "User-Agent": "portal-data-cli/1",
        }
        headers.update(extra or {})
        return headers

    def _path(self, path: str, params: dict[str, Any] | None = None) -> str:
        full = self.prefix + API + path
        if params:
            full += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return full

    def send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: bytes | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        idempotent: bool = True,
        stream: bool = False,
    ) -> http.client.HTTPResponse | Response:
        """One request, retried on connection errors and 502/503/504.

        A request that is not idempotent (starting an upload) is repeated only when the connection
        was refused, so it cannot have reached the server. With `stream` the open response is
        returned (read it to the end before the next request); otherwise a `Response`.
        """
        extra = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            extra["Content-Type"] = "application/json"
        elif body is not None:
            extra.setdefault("Content-Type", "application/octet-stream")
        target = self._path(path, params)
        last_error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                wait = min(self.retry_wait * 2 ** (attempt - 1), 30.0)
                if self.on_retry:
                    self.on_retry(f"{last_error}; trying again in {wait:.0f} s ({attempt}/{self.retries})")
                time.sleep(wait)
            try:
                connection = self._connect()
                connection.request(method, target, body=body, headers=self._headers(extra))
                response = connection.getresponse()
            except _CONNECTION_ERRORS as exc:
                self.close()
                last_error = f"cannot reach {self.url} ({describe_connection_error(exc)})"
                if not idempotent and not isinstance(exc, ConnectionRefusedError):
                    break
                continue
            if response.status in _RETRY_STATUS:
                response.read()
                self.close()
                last_error = f"{self.url} answered {response.status} {response.reason}"
                continue
            if stream and response.status < 400:
                return response
            try:
                data = response.read()
            except _CONNECTION_ERRORS as exc:
                self.close()
                last_error = f"the connection to {self.url} broke ({describe_connection_error(exc)})"
                continue
            if response.will_close:
                self.close()
            result = Response(response.status, response.headers, data)
            if response.status >= 400:
                raise api_error(result, self.url, _subject(path))
            return result
        raise ServerUnreachableError(
            f"{last_error}; giving up. Nothing is lost: run the same command again to resume."
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request whose answer is JSON; returns the decoded body."""
        response = self.send(method, path, **kwargs)
        assert isinstance(response, Response)
        return response.json()

    def pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every row of a paginated list."""
        page = 1
        while True:
            body = self.call("GET", path, params={**params, "page": page, "page_size": 500})
            if isinstance(body, list):
                yield from body
                return
            yield from body["results"]
            if not body.get("next"):
                return
            page += 1


def _subject(path: str) -> str:
    """What a path names, for messages: 'dataset brave_green_ada' or the path."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "datasets" and parts[1] != "duplicates":
        return f"dataset {parts[1]}"
    return path


def describe_connection_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host: {exc.strerror or exc}"
    if isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return "the server closed the connection"
    return str(exc) or type(exc).__name__


def api_error(response: Response, url: str, what: str = "") -> ApiError:
    """The API's error body (`detail`, `code`, `errors`) as an `ApiError` with a helpful message."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        text = response.body[:200].decode("utf-8", "replace").strip()
        return ApiError(
            response.status,
            "http_error",
            f"{url} answered {response.status} without an API error"
            + (f": {text}" if text and not text.startswith("<") else " (is this the portal's address?)"),
        )
    detail = str(body.get("detail") or f"HTTP {response.status}")
    code = str(body.get("code") or "error")
    errors = body.get("errors") if isinstance(body.get("errors"), dict) else {}
    if response.status == 401:
        detail = (
            f"the server did not accept the API token ({detail}): check PORTAL_TOKEN or --token; "
            "it may be mistyped, expired or revoked"
        )
    elif response.status == 404:
        detail = f"{detail.rstrip('.')}: {what or 'this'} does not exist, or you have no access to it"
    elif response.status == 403 and "scope" in detail.lower():
        detail = f"{detail} (create a token with the read and write scopes)"
    return ApiError(response.status, code, detail, errors)


# --- keys -----------------------------------------------------------------------------------------

KeySource = Callable[[], rsa.RSAPrivateKey]


def fixed_key(private_key: rsa.RSAPrivateKey) -> KeySource:
    return lambda: private_key


def unwrap_data_key(portal: Portal, mnemonic: str, key_source: KeySource | None) -> bytes:
    """The dataset's data key, unwrapped here from `wraps/` with the user's private key."""
    return unwrap_data_key_and_generation(portal, mnemonic, key_source)[0]


def unwrap_data_key_and_generation(
    portal: Portal, mnemonic: str, key_source: KeySource | None
) -> tuple[bytes, int | None]:
    """The data key and the key generation of the wrap it came from (a re-key makes a new one)."""
    if key_source is None:
        raise ClientError(
            f"{mnemonic}: this needs the dataset's key, which only your private key can unwrap: "
            "give --key FILE or set PORTAL_KEY_FILE"
        )
    private_key = key_source()
    mine = crypto.public_key_fingerprint(private_key.public_key())
    wraps = portal.call("GET", f"/datasets/{mnemonic}/wraps/")
    for wrap in wraps:
        if wrap["key_fingerprint"] == mine:
            try:
                key = crypto.unwrap_key(private_key, base64.b64decode(wrap["wrapped"]))
                return key, wrap.get("generation")
            except crypto.KeyUnwrapError as exc:
                raise ClientError(f"{mnemonic}: {exc}") from None
    if not wraps:
        raise ClientError(
            f"{mnemonic}: the dataset's key is wrapped for none of your keys (is your key activated? "
            "was the dataset shared before you registered it?)"
        )
    known = ", ".join(f"{w['key_name']!r} ({w['key_fingerprint'][:16]}…)" for w in wraps)
    raise ClientError(
        f"{mnemonic}: the private key given (fingerprint {mine[:16]}…) is not one the dataset's key is "
        f"wrapped for; it is wrapped for your key(s) {known}: give the matching --key / PORTAL_KEY_FILE"
    )


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


# --- upload ---------------------------------------------------------------------------------------


@dataclass
class UploadResult:
    path: str
    file_name: str
    size: int
    mnemonic: str | None
    sha256: str
    chunks: int = 0
    sent: int = 0
    resumed: bool = False
    duplicate_of: str | None = None

    @property
    def skipped(self) -> bool:
        return self.mnemonic is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "file_name": self.file_name,
            "size": self.size,
            "mnemonic": self.mnemonic,
            "sha256": self.sha256,
            "chunks": self.chunks,
            "sent_chunks": self.sent,
            "resumed": self.resumed,
            "duplicate_of": self.duplicate_of,
            "skipped": self.skipped,
        }


def _read_at(handle: IO[bytes], offset: int, length: int) -> bytes:
    """`length` bytes at `offset`; positional (os.pread), so threads can share the handle."""
    parts = []
    while length > 0:
        more = os.pread(handle.fileno(), length, offset)
        if not more:
            raise ClientError(f"{handle.name}: the file became shorter while it was being uploaded")
        parts.append(more)
        offset += len(more)
        length -= len(more)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _chunk_length(size: int, chunk_size: int, index: int, count: int) -> int:
    return chunk_size if index < count - 1 else size - chunk_size * (count - 1)


def chunk_count(size: int, chunk_size: int) -> int:
    """As the server counts: an empty file is one empty chunk."""
    return max(1, -(-size // chunk_size))


def local_dataset_hash(path: str | os.PathLike[str], chunk_size: int) -> str:
    """The dataset hash as the server records it (an empty file has one empty chunk)."""
    return crypto.hash_file(path, chunk_size)[0]


def find_unfinished_upload(
    portal: Portal, handle: IO[bytes], file_name: str, size: int, chunk_size: int | None
) -> dict[str, Any] | None:
    """Your most recent unfinished upload of this file: same name, size and first chunk's hash
    (compared at that upload's chunk size)."""
    candidates = [
        d
        for d in portal.pages("/datasets/", {"state": "uploading", "mine": 1, "q": file_name})
        if d["file_name"] == file_name
        and d["size"] == size
        and (chunk_size is None or d["chunk_size"] == chunk_size)
    ]
    candidates.sort(key=lambda d: d["created_at"], reverse=True)
    for candidate in candidates:
        first = _read_at(handle, 0, min(candidate["chunk_size"], size))
        if hashlib.sha256(first).hexdigest() == candidate["first_chunk_sha256"]:
            return candidate
    return None


def find_duplicate(
    portal: Portal, path: Path, size: int, chunk_size: int, first_sha: str
) -> tuple[str | None, str | None]:
    """(mnemonic of a dataset you can read with the same content, the local dataset hash if computed)."""
    found = portal.call("GET", "/datasets/duplicates/", params={"first_chunk_sha256": first_sha})
    same_size = [d for d in found if d["size"] == size and d.get("sha256")]
    if not same_size:
        return None, None
    local = local_dataset_hash(path, chunk_size)
    for candidate in same_size:
        if candidate["sha256"] == local:
            return candidate["mnemonic"], local
    return None, local


def _put_chunk(
    portal: Portal, mnemonic: str, index: int, data: bytes, digest: str, supply_key: Callable[[], None]
) -> dict[str, Any]:
    for _ in range(2):
        try:
            return portal.call(
                "PUT", f"/datasets/{mnemonic}/chunks/{index}/", body=data, headers={HASH_HEADER: digest}
            )
        except ApiError as exc:
            if exc.code != "key_needed":
                raise
            supply_key()
    raise ClientError(f"{mnemonic}: the server keeps asking for the dataset's key")


def upload_file(
    portal: Portal,
    path: str | os.PathLike[str],
    *,
    file_name: str | None = None,
    name: str = "",
    description: str = "",
    project: int | None = None,
    chunk_size: int | None = None,
    allow_duplicate: bool = False,
    key_source: KeySource | None = None,
    rate_limit: int | None = None,
    parallel: int = DEFAULT_PARALLEL,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> UploadResult:
    """Upload one file as a dataset, resuming your unfinished upload of it if there is one.

    `chunk_size` None: a resumed upload keeps its own; a new one uses the default (2 MiB). Chunks
    are read, hashed and sent by `parallel` threads, each over a connection of its own. The
    dataset hash the server computes at the end must equal the local one, else `ClientError`.
    """
    path = Path(path)
    file_name = file_name or path.name
    say = log or (lambda text: None)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise ClientError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        size = os.fstat(handle.fileno()).st_size
        dataset = find_unfinished_upload(portal, handle, file_name, size, chunk_size)
        local_hash: str | None = None
        if dataset is None:
            size_of_chunks = chunk_size or crypto.DEFAULT_CHUNK_SIZE
            first_sha = hashlib.sha256(_read_at(handle, 0, min(size_of_chunks, size))).hexdigest()
            if not allow_duplicate:
                duplicate, local_hash = find_duplicate(portal, path, size, size_of_chunks, first_sha)
                if duplicate:
                    say(f"{path}: already on the server as {duplicate} (same dataset hash); skipped")
                    return UploadResult(
                        str(path), file_name, size, None, local_hash or "", duplicate_of=duplicate
                    )
            dataset = portal.call(
                "POST",
                "/datasets/",
                json_body={
                    "file_name": file_name,
                    "name": name,
                    "description": description,
                    "project": project,
                    "size": size,
                    "chunk_size": size_of_chunks,
                    "first_chunk_sha256": first_sha,
                },
                idempotent=False,
            )
            stored: dict[int, str] = {}
            resumed = False
        else:
            stored = {
                c["index"]: c["sha256"]
                for c in portal.call("GET", f"/datasets/{dataset['mnemonic']}/chunks/")
            }
            resumed = True
        mnemonic, size_of_chunks = dataset["mnemonic"], dataset["chunk_size"]
        count = chunk_count(size, size_of_chunks)
        if resumed:
            say(f"{path}: resuming {mnemonic}; the server has {len(stored)} of {count} chunks")

        def supply_key() -> None:
            key = unwrap_data_key(portal, mnemonic, key_source)
            portal.call("POST", f"/datasets/{mnemonic}/key/", json_body={"key": encode_key(key)})
            say(f"{mnemonic}: the server's copy of the upload key had expired; supplied it again")

        progress = Progress(f"{file_name} → {mnemonic}", size, quiet=quiet)
        limiter = RateLimiter(rate_limit)
        key_lock = threading.Lock()

        def supply_key_once(expired_at: int) -> None:
            nonlocal key_supplies
            with key_lock:  # several threads may hear "key needed" at once; one supplies it
                if key_supplies == expired_at:
                    supply_key()
                    key_supplies += 1

        key_supplies = 0
        connections = threading.local()

        def send_chunk(index: int) -> tuple[bytes, int, bool]:
            length = _chunk_length(size, size_of_chunks, index, count)
            data = _read_at(handle, index * size_of_chunks, length)
            digest = hashlib.sha256(data).digest()  # (hashlib lets other threads run meanwhile)
            if stored.get(index) == digest.hex():
                return digest, length, False
            limiter.wait(length)
            if not hasattr(connections, "portal"):
                connections.portal = portal if parallel == 1 else portal.copy()
                opened.append(connections.portal)
            seen = key_supplies
            _put_chunk(connections.portal, mnemonic, index, data, digest.hex(), lambda: supply_key_once(seen))
            return digest, length, True

        digests: list[bytes] = [b""] * count
        sent = 0
        opened: list[Portal] = []
        with ThreadPoolExecutor(max(1, parallel), thread_name_prefix="upload") as pool:
            try:
                waiting: dict[Future, int] = {}
                following = iter(range(count))
                while True:
                    # At most `parallel` chunks in memory at a time.
                    for index in itertools.islice(following, max(1, parallel) - len(waiting)):
                        waiting[pool.submit(send_chunk, index)] = index
                    if not waiting:
                        break
                    done, _ = wait(waiting, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = waiting.pop(future)
                        digest, length, was_sent = future.result()
                        digests[index] = digest
                        sent += was_sent
                        progress.advance(length)
            finally:
                for future in waiting:
                    future.cancel()
                for connection in opened:
                    if connection is not portal:
                        connection.close()
        progress.finish()
        local_hash = crypto.dataset_hash(digests)
        try:
            finished = portal.call("POST", f"/datasets/{mnemonic}/finish/", json_body={})
        except ApiError as exc:
            if exc.code != "key_needed":
                raise
            key = unwrap_data_key(portal, mnemonic, key_source)
            finished = portal.call(
                "POST", f"/datasets/{mnemonic}/finish/", json_body={"key": encode_key(key)}
            )
        if finished["sha256"] != local_hash:
            raise ClientError(
                f"{mnemonic}: the server's dataset hash {finished['sha256']} differs from the local "
                f"{local_hash}: the file changed during the upload? Upload it again."
            )
        return UploadResult(str(path), file_name, size, mnemonic, local_hash, count, sent, resumed)
    finally:
        handle.close()


def archive_folder(folder: Path, directory: Path) -> Path:
    """Pack `folder` (recursively) into `<directory>/<folder name>.tar`, reproducibly.

    Entries are sorted, and owner names and ids left out, so the same folder gives the same
    bytes again: an interrupted folder upload resumes like a file's.
    """
    target = directory / f"{folder.name or 'folder'}.tar"

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    partial = target.with_name(f".{target.name}.partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(folder, arcname=folder.name or "folder", recursive=True, filter=clean)
    os.replace(partial, target)
    return target


# --- download -------------------------------------------------------------------------------------


@dataclass
class DownloadResult:
    mnemonic: str
    path: str
    size: int
    sha256: str
    chunks: int
    server_side: bool
    extracted: list[str] = field(default_factory=list)


class _ChunkHasher:
    """Cuts a byte stream into the dataset's chunks and collects their SHA-256 digests."""

    def __init__(self, chunk_size: int):
        self.chunk_size = chunk_size
        self.current = hashlib.sha256()
        self.filled = 0
        self.digests: list[bytes] = []

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(self.chunk_size - self.filled, len(view))
            self.current.update(view[:take])
            self.filled += take
            view = view[take:]
            if self.filled == self.chunk_size:
                self.digests.append(self.current.digest())
                self.current, self.filled = hashlib.sha256(), 0

    def result(self) -> str:
        if self.filled or not self.digests:  # the last, shorter chunk (an empty file: one empty chunk)
            self.digests.append(self.current.digest())
            self.filled = 0
        return crypto.dataset_hash(self.digests)


def _open_partial(target: Path) -> tuple[Path, IO[bytes]]:
    partial = target.with_name(f".{target.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return partial, os.fdopen(fd, "wb")


def download_dataset(
    portal: Portal,
    mnemonic: str,
    target: str | os.PathLike[str],
    *,
    key_source: KeySource | None,
    server_side: bool = False,
    quiet: bool = False,
) -> DownloadResult:
    """Download a dataset to `target`, verified; nothing is left at `target` if any check fails.

    Client-side (default): each chunk's ciphertext is fetched and decrypted here; its GCM tag
    (which binds it to the dataset and position), size and SHA-256 are checked, then the dataset
    hash. Server-side: the server decrypts and streams; the client re-hashes what arrives.
    """
    target = Path(target)
    for attempt in range(3):
        dataset = portal.call("GET", f"/datasets/{mnemonic}/")
        if dataset["state"] != "available":
            raise ClientError(f"{mnemonic} is {dataset['state']}; only available datasets can be downloaded")
        key, generation = unwrap_data_key_and_generation(portal, mnemonic, key_source)
        if crypto.key_fingerprint(key) != dataset["key_fingerprint"]:
            if attempt < 2:  # re-keyed between the two requests
                continue
            raise ClientError(f"{mnemonic}: the unwrapped key does not match the dataset's key fingerprint")
        size = dataset["size"]
        progress = Progress(f"{mnemonic} → {target.name}", size, quiet=quiet)
        partial, out = _open_partial(target)
        try:
            with out:
                if server_side:
                    count = _download_decrypted_by_server(portal, mnemonic, key, dataset, out, progress)
                else:
                    count = _download_and_decrypt(portal, mnemonic, key, generation, dataset, out, progress)
                out.flush()
                os.fsync(out.fileno())
            progress.finish()
            os.replace(partial, target)
        except _ReKeyedError:
            progress.message(f"{mnemonic} was re-keyed during the download; starting again")
            continue
        finally:
            partial.unlink(missing_ok=True)
        return DownloadResult(mnemonic, str(target), size, dataset["sha256"], count, server_side)
    raise ClientError(f"{mnemonic} is being re-keyed; try again when the re-key job has finished")


class _ReKeyedError(Exception):
    """The dataset switched to a new key generation while it was being downloaded."""


def _download_and_decrypt(
    portal: Portal,
    mnemonic: str,
    key: bytes,
    generation: int | None,
    dataset: dict,
    out: IO[bytes],
    progress: Progress,
) -> int:
    table = portal.call("GET", f"/datasets/{mnemonic}/chunks/")
    size, chunk_size = dataset["size"], dataset["chunk_size"]
    count = chunk_count(size, chunk_size)
    if [c["index"] for c in table] != list(range(count)):
        raise IntegrityError(f"{mnemonic}: the server's chunk table is incomplete ({len(table)} of {count})")
    digests = []
    for row in table:
        index = row["index"]
        response = portal.send("GET", f"/datasets/{mnemonic}/chunks/{index}/", headers={"Accept": "*/*"})
        assert isinstance(response, Response)
        served = response.headers.get("X-Key-Generation")
        if generation is not None and served is not None and served != str(generation):
            raise _ReKeyedError()
        try:
            plaintext = crypto.decrypt_chunk(
                key, mnemonic, index, base64.b64decode(row["nonce"]), response.body
            )
        except crypto.ChunkIntegrityError:
            raise IntegrityError(
                f"{mnemonic}: chunk {index} failed authentication (damaged on the server or on the way, "
                "or moved); the download was stopped and nothing was kept"
            ) from None
        digest = hashlib.sha256(plaintext).digest()
        expected_length = _chunk_length(size, chunk_size, index, count)
        if digest.hex() != row["sha256"] or len(plaintext) != expected_length:
            raise IntegrityError(
                f"{mnemonic}: chunk {index} does not match its recorded SHA-256; nothing was kept"
            )
        out.write(plaintext)
        digests.append(digest)
        progress.advance(len(plaintext))
    if crypto.dataset_hash(digests) != dataset["sha256"]:
        raise IntegrityError(f"{mnemonic}: the dataset hash of the downloaded data does not match")
    return len(digests)


def _download_decrypted_by_server(
    portal: Portal, mnemonic: str, key: bytes, dataset: dict, out: IO[bytes], progress: Progress
) -> int:
    response = portal.send(
        "GET",
        f"/datasets/{mnemonic}/content/",
        headers={KEY_HEADER: encode_key(key), "Accept": "*/*"},
        stream=True,
    )
    assert isinstance(response, http.client.HTTPResponse)
    hasher = _ChunkHasher(dataset["chunk_size"])
    received = 0
    try:
        while True:
            block = response.read(READ_BLOCK)
            if not block:
                break
            hasher.update(block)
            out.write(block)
            received += len(block)
            progress.advance(len(block))
    except _CONNECTION_ERRORS as exc:
        portal.close()
        raise IntegrityError(
            f"{mnemonic}: the download broke off in chunk {received // dataset['chunk_size']} after "
            f"{received:,} bytes ({describe_connection_error(exc)}; the server stops at a chunk that "
            "fails its check); nothing was kept"
        ) from None
    if response.will_close:
        portal.close()
    if received != dataset["size"]:
        raise IntegrityError(
            f"{mnemonic}: the server sent {received:,} of {dataset['size']:,} bytes and stopped (it stops "
            "at a chunk that fails its check; its log names the chunk); nothing was kept"
        )
    if hasher.result() != dataset["sha256"]:
        raise IntegrityError(f"{mnemonic}: the dataset hash of the downloaded data does not match")
    return len(hasher.digests)


def extract_archive(archive: Path, directory: Path) -> list[str]:
    """Unpack a folder archive into `directory` (which must not exist), refusing unsafe members."""
    if directory.exists():
        raise ClientError(f"{directory} exists; refusing to extract over it")
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        with tarfile.open(archive) as tar:
            names = tar.getnames()
            tar.extractall(staging, filter="data")
        os.replace(staging, directory)
    except (tarfile.TarError, OSError) as exc:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise ClientError(f"{archive}: cannot extract it ({exc})") from None
    return names


# --- sharing and listing --------------------------------------------------------------------------


def share_dataset(
    portal: Portal, mnemonic: str, user: str, *, level: str = "read", key_source: KeySource | None
) -> dict[str, Any]:
    """Grant `user` read or write: the data key is unwrapped here and sent with the grant."""
    key = unwrap_data_key(portal, mnemonic, key_source)
    return portal.call(
        "POST",
        f"/datasets/{mnemonic}/grants/",
        json_body={"user": user, "level": level, "key": encode_key(key)},
    )


def list_datasets(portal: Portal, *, state: str | None = None, mine: bool = False) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"state": state, "mine": 1 if mine else None}
    return list(portal.pages("/datasets/", params))
