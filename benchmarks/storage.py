"""Benchmark of encrypted storage: upload, server-side decrypted download and re-key over loopback.

Each figure stands beside the raw limit measured in the same run:

- the same cryptographic work over the same 2 MiB chunks in one process, with the code the server
  uses (`storage.crypto`): SHA-256 + AES-256-GCM encryption for an upload, decryption + SHA-256 for
  a download, decryption + SHA-256 + encryption for a re-key;
- `openssl speed` for SHA-256 and AES-256-GCM (16 KiB blocks), and the two combined.

Targets: upload and download at least 50 % of their raw pipeline, re-key at least 80 %; the web
and worker processes' peak memory (VmHWM) under 256 MiB while moving a 4 GiB file.

The upload is measured twice: `storage.client.upload_file` (the CLI's code, its default of 4
chunks on their way at once), which reads and hashes the file on the same machine, and the
server's side alone, with the chunks and their hashes made before the clock starts (as a load
generator prepares its requests) and 8 chunks on their way at once: with the CLI's 4, a chunk
waiting for its file to reach the disk left the server's cores partly idle (about 20 % on this
machine's disk), which measures the client rather than the server. The server is uvicorn as
deployed (`PORTAL_WEB_WORKERS` worker processes, 2 by default), started by this benchmark; the
download reads `content/` with the key in the header and throws the bytes away; the re-key is the
`storage.rekey` job on a Celery worker for the `crypto` queue (timed from the job's start to its
end, the switch to the new key; as deployed, a task of their own removes the old files after the
grace period, here only once the benchmark is over). Each is measured with the data directory on its
disk, and again on a memory-backed file system (/dev/shm) where there is room, which shows what
the portal does where the disk is not the limit. On the disk, the re-key's file work alone (the
chunk files copied with the job's threads, no cryptography) is measured right before each re-key:
a re-key reads as much as it writes, so no re-key there can be faster, and a disk's speed drifts
from one minute to the next. Each throughput (the raw pipelines too) is the median of three runs
in a row (one with `--quick`). The download and the re-key check each
chunk's GCM tag and do not hash its plaintext again, as the server does; the raw pipelines include
SHA-256 all the same, as the issue defines them. Run alone:
`.venv/bin/python -m benchmarks.storage [--quick]`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from portal.httpserver import PROTOCOL as HTTP_PROTOCOL

MIB = 1024 * 1024
# `repeats`: each throughput (the raw pipelines too) is measured that many times in a row and its
# median reported, so one run slowed by the machine's neighbours does not stand for the portal.
FULL = {"throughput_bytes": 1024 * MIB, "memory_bytes": 4096 * MIB, "repeats": 3}
QUICK = {"throughput_bytes": 128 * MIB, "memory_bytes": 256 * MIB, "repeats": 1}
MEMORY_LIMIT_MIB = 256
BENCH_REKEY_GRACE_SECONDS = 6 * 3600
# Web worker processes, as deployed (`PORTAL_WEB_WORKERS` in deploy/entrypoint.sh, 2 by default).
WEB_WORKERS = int(os.environ.get("PORTAL_WEB_WORKERS", "2"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vm_hwm_mib(pid: int) -> float:
    """Peak resident memory of a process since it started (Linux VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def peak_of_tree(pid: int) -> float:
    peaks = []
    for member in descendants(pid):
        try:
            peaks.append(vm_hwm_mib(member))
        except OSError:
            pass
    return max(peaks)


def openssl_speed() -> dict[str, float]:
    """MB/s (10^6 bytes) of `openssl speed -evp` for SHA-256 and AES-256-GCM at 16 KiB."""
    rates = {}
    for name, algorithm in (("sha256", "sha256"), ("aes-256-gcm", "aes-256-gcm")):
        output = subprocess.run(
            ["openssl", "speed", "-seconds", "2", "-bytes", "16384", "-evp", algorithm],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        value = re.findall(r"([\d.]+)k\s*$", output.strip().splitlines()[-1])
        rates[name] = float(value[-1]) / 1000 if value else float("nan")
    return rates


def raw_pipelines(path: Path, chunk_size: int, repeats: int = 1) -> dict[str, float]:
    """MB/s of the servers' crypto work per operation, in this process, over the file's chunks:
    the median of `repeats` passes."""
    passes = [_raw_pass(path, chunk_size) for _ in range(repeats)]
    return {name: statistics.median(rates[name] for rates in passes) for name in passes[0]}


def _raw_pass(path: Path, chunk_size: int) -> dict[str, float]:
    import hashlib

    from storage import crypto

    key, other = crypto.new_data_key(), crypto.new_data_key()
    timings = {"upload": 0.0, "download": 0.0, "rekey": 0.0}
    size = 0
    with open(path, "rb") as handle:
        for index, chunk in enumerate(crypto.iter_chunks(handle, chunk_size)):
            size += len(chunk)
            start = time.perf_counter()
            hashlib.sha256(chunk).digest()
            nonce, sealed = crypto.encrypt_chunk(key, "bench_raw_chunks", index, chunk)
            timings["upload"] += time.perf_counter() - start

            start = time.perf_counter()
            plain = crypto.decrypt_chunk(key, "bench_raw_chunks", index, nonce, sealed)
            hashlib.sha256(plain).digest()
            timings["download"] += time.perf_counter() - start

            start = time.perf_counter()
            plain = crypto.decrypt_chunk(key, "bench_raw_chunks", index, nonce, sealed)
            hashlib.sha256(plain).digest()
            crypto.encrypt_chunk(other, "bench_raw_chunks", index, plain)
            timings["rekey"] += time.perf_counter() - start
    return {name: size / seconds / 1e6 for name, seconds in timings.items()}


def disk_write_speed(path: Path, directory: Path, chunk_size: int) -> float:
    """MB/s of writing the file's bytes into `directory` in chunk files, as the portal writes them
    (`storage.services.chunkstore.write_file`: directly to the disk where the file system allows
    it), and flushing them all, as a finished upload or a re-key must before it counts: the
    disk's own limit for those two."""
    import shutil

    from storage.services import chunkstore

    target = directory / "bench-disk-write"
    target.mkdir(parents=True, exist_ok=True)
    buffers = chunkstore.ChunkBuffers()
    size, names = 0, []
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while got := handle.readinto(block := buffers.get("chunk", chunk_size)):
            name = target / f"{len(names):06d}.bin"
            chunkstore.write_file(name, block[:got], durable=False)
            names.append(name)
            size += got
    for name in names:
        chunkstore.fsync_path(name)
    seconds = time.perf_counter() - start
    shutil.rmtree(target, ignore_errors=True)
    return size / seconds / 1e6


def disk_copy_speed(path: Path, directory: Path, chunk_size: int) -> float:
    """MB/s of the re-key's file work alone on the data directory's disk: the file's chunks, stored
    as chunk files beforehand, each read and written to a new chunk file as the re-key job does
    (`storage.services.chunkstore`, the job's number of threads, flushed at the end), with no
    cryptography. A re-key reads as much as it writes, so on one disk this bounds it."""
    import shutil
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from storage.services import chunkstore, rekey

    source, target = directory / "bench-disk-copy" / "old", directory / "bench-disk-copy" / "new"
    source.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    sealed = chunk_size + 16  # a chunk file: ciphertext and tag
    block = chunkstore.ChunkBuffers().get("chunk", sealed)
    count = 0
    with open(path, "rb", buffering=0) as handle:
        while got := handle.readinto(block[:chunk_size]):
            chunkstore.write_file(source / f"{count:06d}.bin", block[: got + 16], durable=False)
            count += 1
    os.sync()
    local = threading.local()

    def copy(index: int) -> int:
        if not hasattr(local, "buffer"):
            local.buffer = chunkstore.aligned_buffer(sealed + 1)
        view = memoryview(local.buffer)[: sealed + 1]
        stored = chunkstore.read_file_into(source / f"{index:06d}.bin", view)
        chunkstore.write_file(target / f"{index:06d}.bin", stored, durable=False)
        return len(stored)

    start = time.perf_counter()
    with ThreadPoolExecutor(rekey.REKEY_THREADS) as pool:
        size = sum(pool.map(copy, range(count)))
    for index in range(count):
        chunkstore.fsync_path(target / f"{index:06d}.bin")
    seconds = time.perf_counter() - start
    shutil.rmtree(directory / "bench-disk-copy", ignore_errors=True)
    os.sync()  # the file system gives the blocks back (discards them) now, not in the next measure
    return size / seconds / 1e6


def make_file(path: Path, size: int) -> Path:
    if path.exists() and path.stat().st_size == size:
        return path
    with open(path, "wb") as handle:
        left = size
        while left:
            block = os.urandom(min(left, 16 * MIB))
            handle.write(block)
            left -= len(block)
    return path


def bench_user(state: Path):
    """A user with an active key (its private key kept under the state directory) and a token."""
    from django.utils import timezone

    from portal.models import User
    from portal.services.tokens import create_api_token
    from storage import crypto
    from storage.models import KeyState, UserKey

    user, _ = User.objects.get_or_create(username="bench-storage")
    key_file = state / "bench-storage-key.pem"
    if key_file.exists():
        private_key = crypto.load_private_key(key_file.read_text())
    else:
        private_key = crypto.generate_private_key()
        key_file.write_text(crypto.private_key_pem(private_key))
    public = private_key.public_key()
    UserKey.objects.get_or_create(
        user=user,
        fingerprint=crypto.public_key_fingerprint(public),
        defaults={"name": "bench", "public_key": crypto.public_key_pem(public), "state": KeyState.ACTIVE},
    )
    _, token = create_api_token(
        user, name="bench", scopes=["read", "write"], expires_at=timezone.now() + dt.timedelta(hours=3)
    )
    return private_key, token


def wait_job(portal, job_id: int, timeout: float = 3600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = portal.call("GET", f"/jobs/{job_id}/")
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise RuntimeError(f"re-key job {job_id} did not finish")


def rekey_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("storage.services.rekey", "storage.tasks"))


# Chunks the prepared upload keeps on their way: enough to keep the server busy (see above).
PREPARED_PARALLEL = 8


def upload_prepared(portal, path: Path, parallel: int = PREPARED_PARALLEL) -> tuple[float, str]:
    """The server's side of an upload alone: (MB/s, mnemonic). The requests are made before they
    are sent, as a load generator (wrk, ab) prepares its requests: the chunks and their SHA-256
    before the clock starts, and each request's head once the upload is started. So the client's
    reading, hashing and HTTP library take little CPU from the server on this machine. Then
    start, `parallel` kept-alive connections sending chunks (head and body in one system call,
    each answer read and checked), and finish, as the CLI does (with its own number of
    connections)."""
    import hashlib
    import json
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from storage.client import API, HASH_HEADER

    size, step = path.stat().st_size, 2 * MIB
    chunks = []
    with open(path, "rb") as handle:
        while chunk := handle.read(step):
            chunks.append(chunk)
    digests = [hashlib.sha256(chunk).hexdigest() for chunk in chunks]
    local = threading.local()
    opened: list[socket.socket] = []
    start = time.perf_counter()
    dataset = portal.call(
        "POST", "/datasets/", json_body={"file_name": path.name, "size": size, "chunk_size": step}
    )
    mnemonic = dataset["mnemonic"]
    heads = [
        (
            f"PUT {portal.prefix}{API}/datasets/{mnemonic}/chunks/{index}/ HTTP/1.1\r\n"
            f"Host: {portal.host}:{portal.port}\r\nAuthorization: Bearer {portal.token}\r\n"
            f"Accept: application/json\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(chunk)}\r\n{HASH_HEADER}: {digests[index]}\r\n\r\n"
        ).encode()
        for index, chunk in enumerate(chunks)
    ]

    def put(index: int) -> None:
        if not hasattr(local, "sock"):
            local.sock = socket.create_connection((portal.host, portal.port))
            local.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local.answers = local.sock.makefile("rb")
            opened.append(local.sock)
        parts = [memoryview(heads[index]), memoryview(chunks[index])]
        while parts:
            sent = local.sock.sendmsg(parts)
            while parts and sent >= len(parts[0]):
                sent -= len(parts.pop(0))
            if parts:
                parts[0] = parts[0][sent:]
        status = local.answers.readline().split()[1]
        length = 0
        while (line := local.answers.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answer = local.answers.read(length)
        if status != b"200":
            raise RuntimeError(f"chunk {index}: {status.decode()} {answer[:200]!r}")
        if json.loads(answer)["sha256"] != digests[index]:
            raise RuntimeError(f"chunk {index}: the server recorded another hash")

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(put, range(len(chunks))))
    portal.call("POST", f"/datasets/{mnemonic}/finish/", json_body={})
    seconds = time.perf_counter() - start
    for sock in opened:
        sock.close()
    return size / seconds / 1e6, mnemonic


def move_file(
    portal, private_key, path: Path, *, rekey: bool, repeats: int = 1, disk_copy=None
) -> dict[str, float | str]:
    """Upload, download (server-side, discarded) and re-key one file; MB/s of each (the download
    and the re-key: the median of `repeats`, each re-key starting from the last one's key).

    `disk_copy`: measures the disk's copy rate (`disk_copy_speed`) right before each re-key, so that
    the two meet the same state of a disk whose speed drifts: `copy` is the median of those, and
    `rekey_of_copy` the median of each re-key's share of the copy rate measured just before it."""
    from storage import client

    size = path.stat().st_size
    start = time.perf_counter()
    result = client.upload_file(portal, path, allow_duplicate=True, quiet=True)
    figures: dict[str, float | str] = {"upload": size / (time.perf_counter() - start) / 1e6}
    mnemonic = result.mnemonic
    figures["mnemonic"] = mnemonic
    downloads, rekeys, copies = [], [], []
    for _ in range(repeats):
        key = client.unwrap_data_key(portal, mnemonic, client.fixed_key(private_key))
        start = time.perf_counter()
        response = portal.send(
            "GET",
            f"/datasets/{mnemonic}/content/",
            headers={client.KEY_HEADER: client.encode_key(key), "Accept": "*/*"},
            stream=True,
        )
        received = 0
        while block := response.read(client.READ_BLOCK):
            received += len(block)
        downloads.append(received / (time.perf_counter() - start) / 1e6)
        if received != size:
            raise RuntimeError(f"the download gave {received} of {size} bytes")
        if rekey:
            if disk_copy is not None:
                copies.append(disk_copy())
            body = {"key": client.encode_key(key)}
            job = portal.call("POST", f"/datasets/{mnemonic}/rekey/", json_body=body)
            job = wait_job(portal, job["id"])
            if job["state"] != "succeeded":
                raise RuntimeError(f"re-key job failed: {job.get('error')}")
            rekeys.append(size / job["duration"] / 1e6)
    figures["download"] = statistics.median(downloads)
    if rekeys:
        figures["rekey"] = statistics.median(rekeys)
    if copies:
        figures["copy"] = statistics.median(copies)
        figures["rekey_of_copy"] = statistics.median(r / c for r, c in zip(rekeys, copies, strict=True))
    return figures


def remove_datasets(mnemonics: list[str]) -> None:
    from storage.models import Dataset
    from storage.services import chunkstore, lifecycle

    for dataset in Dataset.objects.filter(mnemonic__in=mnemonics):
        try:
            lifecycle.purge_dataset(dataset)
        except Exception:  # noqa: BLE001 - best effort: the files at least go
            chunkstore.remove_dataset_files(dataset)


@contextmanager
def servers(data_dir: Path, logs: Path, tag: str, with_worker: bool):
    """A uvicorn process and (for re-keys) a Celery worker on the `crypto` queue, both keeping the
    datasets' files in `data_dir`; yields (web, worker or None, base URL)."""
    from benchmarks.__main__ import spawn, wait_http

    port = free_port()
    env_note = os.environ.copy()
    # As deployed, a re-key job ends at its switch and a task of its own removes the old files once
    # the grace period (60 s) is over; here the grace period outlasts the benchmark, so that no
    # removal falls into a later measurement (the datasets' files all go at the end).
    os.environ["PORTAL_STORAGE_REKEY_GRACE_SECONDS"] = str(BENCH_REKEY_GRACE_SECONDS)
    os.environ["PORTAL_DATA_DIR"] = str(data_dir)
    try:
        web = spawn(
            [sys.executable, "-m", "uvicorn", "portal.asgi:application", "--port", str(port)]
            + ["--http", HTTP_PROTOCOL]
            + ["--log-level", "warning", "--lifespan", "off", "--workers", str(WEB_WORKERS)],
            logs / f"storage-web-{tag}.log",
        )
        worker = (
            spawn(
                [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", "crypto", "-c", "1"]
                + ["--hostname", f"bench-crypto-{tag}-{os.getpid()}@bench", "--without-mingle"]
                + ["--without-gossip", "-l", "WARNING"],
                logs / f"storage-worker-{tag}.log",
            )
            if with_worker
            else None
        )
    finally:
        os.environ.clear()
        os.environ.update(env_note)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz")
        if worker is not None:
            time.sleep(3)  # the worker's first heartbeat; the job would wait in the queue otherwise
        yield web, worker, base
    finally:
        for proc in (web, worker):
            if proc is not None:
                proc.terminate()
        for proc in (web, worker):
            if proc is not None:
                proc.wait(timeout=60)


def memory_directory(needed: int) -> Path | None:
    """A folder on a memory-backed file system (tmpfs) with room for `needed` bytes, if any."""
    shm = Path("/dev/shm")  # noqa: S108 - the system's memory-backed folder, not a temporary name
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        return None
    stat = os.statvfs(shm)
    if stat.f_bavail * stat.f_frsize < needed:
        return None
    return shm / f"portal-bench-storage-{os.getpid()}"


def bench_storage(quick: bool = False, *, log=print) -> tuple[list[tuple[str, float, float, str]], list[str]]:
    """Rows for the main table and a section of their own for the report."""
    import shutil

    from django.conf import settings

    from benchmarks.__main__ import STATE
    from storage import client

    sizes = QUICK if quick else FULL
    work = STATE / "storage"
    work.mkdir(parents=True, exist_ok=True)
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    private_key, token = bench_user(work)
    has_rekey = rekey_available()
    disk_dir = Path(settings.PORTAL_DATA_DIR)
    mnemonics: list[str] = []
    files: list[Path] = []
    moved: dict[str, dict] = {}
    # The CLI's dataset with the generations its re-keys left, and one prepared upload at a time.
    in_memory = memory_directory((sizes["repeats"] + 3) * sizes["throughput_bytes"] + 64 * MIB)
    try:
        path = make_file(work / "throughput.bin", sizes["throughput_bytes"])
        warm = make_file(work / "warm-up.bin", 4 * MIB)
        files += [path, warm]
        log(f"storage: raw pipelines over {path.stat().st_size // MIB} MiB")
        raw = raw_pipelines(path, 2 * MIB, sizes["repeats"])
        speed = openssl_speed()
        disk = disk_write_speed(path, disk_dir, 2 * MIB)
        places = [("disk", disk_dir)] + ([("memory", in_memory)] if in_memory else [])
        for tag, data_dir in places:
            log(f"storage: upload, download, re-key with the data directory on {tag}")
            with servers(data_dir, logs, tag, has_rekey) as (web, worker, base):
                portal = client.Portal(base, token, retries=2)
                # Warm-up, not counted: a process's first request and first job import code and
                # open connections.
                mnemonics.append(str(move_file(portal, private_key, warm, rekey=has_rekey)["mnemonic"]))
                copy = partial(disk_copy_speed, path, disk_dir, 2 * MIB) if tag == "disk" else None
                moved[tag] = move_file(
                    portal, private_key, path, rekey=has_rekey, repeats=sizes["repeats"], disk_copy=copy
                )
                mnemonics.append(str(moved[tag]["mnemonic"]))
                uploads = []
                for _ in range(sizes["repeats"]):
                    speed_up, prepared = upload_prepared(portal, path)
                    uploads.append(speed_up)
                    remove_datasets([prepared])  # room on the memory-backed file system
                moved[tag]["server_upload"] = statistics.median(uploads)
                if tag == "disk":
                    web_after_1 = peak_of_tree(web.pid)
                    worker_after_1 = peak_of_tree(worker.pid) if worker else float("nan")
                    big = make_file(work / "memory.bin", sizes["memory_bytes"])
                    files.append(big)
                    log(f"storage: moving {big.stat().st_size // MIB} MiB for peak memory")
                    big_moved = move_file(portal, private_key, big, rekey=has_rekey)
                    mnemonics.append(str(big_moved["mnemonic"]))
                    web_peak = peak_of_tree(web.pid)
                    worker_peak = peak_of_tree(worker.pid) if worker else float("nan")
                portal.close()
    finally:
        remove_datasets(mnemonics)
        if in_memory is not None:
            shutil.rmtree(in_memory, ignore_errors=True)
        for path in files:
            path.unlink(missing_ok=True)

    size_mib = sizes["throughput_bytes"] // MIB
    big_mib = sizes["memory_bytes"] // MIB
    combined = 1 / (1 / speed["sha256"] + 1 / speed["aes-256-gcm"])
    raw["server_upload"] = raw["upload"]
    operations = [
        (
            "upload",
            "upload through the CLI (reads and hashes on this machine too)",
            "SHA-256 + AES-256-GCM encrypt",
            0.5,
        ),
        (
            "server_upload",
            "upload, server side (verify + encrypt + write; requests made beforehand)",
            "SHA-256 + AES-256-GCM encrypt",
            0.5,
        ),
        ("download", "server-side decrypted download", "AES-256-GCM decrypt + SHA-256", 0.5),
    ]
    if has_rekey:
        operations.append(("rekey", "re-key job", "decrypt + SHA-256 + encrypt", 0.8))
    where = {"disk": "data on disk", "memory": "data in memory (tmpfs)"}
    rows = [
        (
            f"Storage {label.split(' (')[0]}, {size_mib} MiB, {where[tag]} (MB/s)",
            figures[name],
            raw[name],
            f"{what}, same chunks, one process",
        )
        for tag, figures in moved.items()
        for name, label, what, _ in operations
    ]
    head = "| Operation | Raw pipeline (MB/s) | " + " | ".join(
        f"Portal, {where[tag]} (MB/s) | Ratio" for tag in moved
    )
    section = [
        "",
        "## Encrypted storage",
        "",
        f"{size_mib} MiB file over loopback, 2 MiB chunks; uvicorn with {WEB_WORKERS} worker process(es) (as "
        "deployed: `PORTAL_WEB_WORKERS`), one Celery worker process "
        "(`crypto` queue); the clients (the CLI's code, 4 chunks at once, and prepared requests for the "
        f"server's side alone, {PREPARED_PARALLEL} at once) on the same machine. Each "
        "configuration is warmed up with a 4 MiB dataset first. MB/s are 10^6 bytes per second"
        + (
            f"; each figure (the raw pipelines too) is the median of {sizes['repeats']} runs in a row"
            if sizes["repeats"] > 1
            else ""
        )
        + ". The download and the re-key rely on each chunk's GCM tag and do not hash the plaintext "
        "again (the raw pipelines include SHA-256 all the same).",
        "",
        head + " | Target |",
        "| --- | ---: | " + " | ".join("---: | ---:" for _ in moved) + " | --- |",
    ]
    for name, label, _, target in operations:
        cells = " | ".join(
            f"{figures[name]:.0f} | {figures[name] / raw[name]:.2f}" for figures in moved.values()
        )
        section.append(f"| {label} | {raw[name]:.0f} | {cells} | ≥ {target:.2f} |")
    section += [
        "",
        f"`openssl speed -evp` (16 KiB blocks): SHA-256 {speed['sha256']:.0f} MB/s, AES-256-GCM "
        f"{speed['aes-256-gcm']:.0f} MB/s, both in turn {combined:.0f} MB/s. The data directory's "
        f"disk takes the same bytes as chunk files, written as the portal writes them (past the page "
        f"cache where the file system allows it) and flushed, at {disk:.0f} MB/s: an upload and a "
        "re-key must have their chunks on disk before they count (and a re-key reads as much as it "
        "writes), so this bounds both there. "
        + (
            f"The re-key's file work alone (each chunk file read and written anew with the job's "
            f"threads, no cryptography), measured right before each re-key on that disk, runs at "
            f"{moved['disk']['copy']:.0f} MB/s, {moved['disk']['copy'] / raw['rekey']:.2f} of the "
            f"re-key's raw pipeline: no re-key there can be faster. The re-key job reached "
            f"{moved['disk']['rekey_of_copy']:.2f} of it (the median of each re-key against the copy "
            "before it). "
            if "copy" in moved.get("disk", {})
            else ""
        )
        + (
            "The same runs with the data directory on a memory-backed file system show what the "
            "portal does when the disk is not the limit."
            if "memory" in moved
            else "(No memory-backed file system with room was found for the second configuration.)"
        ),
        "",
        "| Peak memory (VmHWM, MiB) | web (largest uvicorn process) | worker (largest process) | Target |",
        "| --- | ---: | ---: | --- |",
        f"| after moving {size_mib} MiB | {web_after_1:.0f} | {worker_after_1:.0f} | < {MEMORY_LIMIT_MIB} |",
        f"| after moving {big_mib} MiB too | {web_peak:.0f} | {worker_peak:.0f} | < {MEMORY_LIMIT_MIB} |",
    ]
    if quick:
        section += ["", f"(--quick: {big_mib} MiB instead of 4 GiB for the memory figure.)"]
    return rows, section


def main() -> int:
    from benchmarks.__main__ import run_alone

    return run_alone(bench_storage)


if __name__ == "__main__":
    sys.exit(main())
