"""The command-line client end to end: `python -m storage.cli` against a real uvicorn server.

The CLI runs as a subprocess without Django settings, the way a user runs it; the server is the
portal under uvicorn on the test database, stopped and started again where a test needs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from django.conf import settings

from conftest import free_port, start_asgi_server
from storage import crypto
from storage.models import Chunk, Dataset, DatasetState, Grant, KeyState, RootKey, UserKey
from tests.helpers import user_with_token

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parents[1]
CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def rsa_keys():
    """RSA-4096 keys are slow to make: one per person (and the operators' root key) per module."""
    return {name: crypto.generate_private_key() for name in ("alice", "bob", "mallory", "root")}


class Server:
    """The portal under uvicorn on a fixed port, so it can be stopped and started again."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs, self.port = dict(env), logs, free_port()
        self.process = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.starts = 0

    def start(self, **extra_env: str) -> Server:
        self.starts += 1
        self.process, url = start_asgi_server(
            {**self.env, **extra_env}, self.logs, name=f"cli-web-{self.port}-{self.starts}", port=self.port
        )
        assert url == self.url
        return self

    def kill(self) -> None:
        """Stop it the hard way (SIGKILL), as a crash or a pod eviction would."""
        self.process.stop(sig=9)


@pytest.fixture
def server(service_env, service_logs):
    running = Server(service_env, service_logs).start()
    yield running
    running.process.stop()


@pytest.fixture
def people(rsa_keys, tmp_path):
    """alice and bob with tokens and active keys (private key files in tmp_path); a root key."""
    found = {}
    for name in ("alice", "bob"):
        user, token = user_with_token(name)
        public = rsa_keys[name].public_key()
        UserKey.objects.create(
            user=user,
            name=f"{name}'s laptop",
            public_key=crypto.public_key_pem(public),
            fingerprint=crypto.public_key_fingerprint(public),
            state=KeyState.ACTIVE,
        )
        key_file = tmp_path / f"{name}.pem"
        key_file.write_text(crypto.private_key_pem(rsa_keys[name]))
        found[name] = {"user": user, "token": token, "key": key_file}
    mallory_file = tmp_path / "mallory.pem"
    mallory_file.write_text(crypto.private_key_pem(rsa_keys["mallory"]))
    found["mallory_key"] = mallory_file
    root = rsa_keys["root"].public_key()
    RootKey.objects.create(
        name="operators",
        public_key=crypto.public_key_pem(root),
        fingerprint=crypto.public_key_fingerprint(root),
    )
    return found


def cli_env(server: Server | None, person: dict | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "PORTAL_URL", "PORTAL_TOKEN", "PORTAL_KEY_FILE")
    }
    if server is not None:
        env["PORTAL_URL"] = server.url
    if person is not None:
        env["PORTAL_TOKEN"] = person["token"]
        env["PORTAL_KEY_FILE"] = str(person["key"])
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "storage.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(*args: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, Path, Path]:
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    process = subprocess.Popen(
        [sys.executable, "-m", "storage.cli", *args],
        cwd=REPO,
        env=env,
        stdout=open(out, "wb"),
        stderr=open(err, "wb"),
    )
    return process, out, err


def offline_hash(path: Path, chunk_size: str = "64KiB") -> str:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-m", "storage.cli", "hash", str(path), "--chunk-size", chunk_size],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def stored_chunks(file_name: str) -> int:
    return Chunk.objects.filter(dataset__file_name=file_name).count()


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --- the acceptance test --------------------------------------------------------------------------


def test_an_upload_interrupted_by_a_server_restart_resumes_and_matches_the_offline_hash(
    server, people, tmp_path
):
    """The server is killed mid-upload; the CLI gives up (no retries), the server comes back, the
    same command resumes and sends only the missing chunks; the dataset hash is the CLI's `hash`."""
    source = random_file(tmp_path / "reads.fastq", 40 * CHUNK + 777)
    env = cli_env(server, people["alice"])
    args = ("upload", str(source), "--chunk-size", "64KiB", "--json", "--retries", "0")
    process, out, err = start_cli(*args, "--limit-rate", "640K", env=env, log=tmp_path / "first")
    wait_for(lambda: stored_chunks("reads.fastq") >= 5, what="five chunks on the server")
    server.kill()
    assert process.wait(timeout=60) == 1
    message = err.read_text()
    assert "cannot reach" in message and "run the same command again to resume" in message, message
    assert out.read_text() == ""
    before = stored_chunks("reads.fastq")
    assert 5 <= before < 41

    server.start()
    resumed = cli(*args, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming " in resumed.stderr and f"has {before} of 41 chunks" in resumed.stderr
    (result,) = json_lines(resumed.stdout)
    assert result["resumed"] is True and result["sent_chunks"] == 41 - before
    dataset = Dataset.objects.get(mnemonic=result["mnemonic"])
    assert dataset.state == DatasetState.AVAILABLE
    assert dataset.sha256 == result["sha256"] == offline_hash(source)
    assert Dataset.objects.count() == 1  # resumed, not started again

    # And the bytes come back, decrypted here and by the server.
    for flags, name in (([], "client.bin"), (["--server-side"], "server.bin")):
        got = cli("download", dataset.mnemonic, "--out", str(tmp_path / name), *flags, env=env)
        assert got.returncode == 0, got.stderr
        assert (tmp_path / name).read_bytes() == source.read_bytes()


def test_the_client_rides_out_a_restart_that_lost_the_upload_key(server, people, tmp_path):
    """The server restarts with another sealing secret while the CLI keeps retrying: the kept
    upload key cannot be opened any more (409 key_needed), so the CLI unwraps the key with the
    private key and supplies it, and the upload completes in the same run."""
    source = random_file(tmp_path / "scan.tif", 30 * CHUNK)
    env = cli_env(server, people["alice"])
    process, out, err = start_cli(
        "upload",
        str(source),
        "--chunk-size",
        "64KiB",
        "--json",
        "--retries",
        "8",
        "--limit-rate",
        "640K",
        env=env,
        log=tmp_path / "riding",
    )
    wait_for(lambda: stored_chunks("scan.tif") >= 4, what="four chunks on the server")
    server.kill()
    time.sleep(1)
    server.start(PORTAL_SEALING_KEY="a-new-sealing-secret-after-the-restart-0123456789")
    assert process.wait(timeout=120) == 0, err.read_text()
    notes = err.read_text()
    assert "trying again" in notes and "supplied it again" in notes, notes
    (result,) = json_lines(out.read_text())
    assert result["sha256"] == offline_hash(source)
    assert Dataset.objects.get(mnemonic=result["mnemonic"]).state == DatasetState.AVAILABLE


# --- downloads, folders, duplicates, sharing ------------------------------------------------------


def test_folder_upload_round_trip_duplicates_and_sharing(server, people, tmp_path):
    folder = tmp_path / "run-42"
    (folder / "lane1" / "deep").mkdir(parents=True)
    random_file(folder / "lane1" / "a.fastq", 3 * CHUNK + 5)
    random_file(folder / "lane1" / "deep" / "b.bin", 17)
    (folder / "notes.txt").write_text("sample sheet\n")
    (folder / "empty").mkdir()
    alice, bob = people["alice"], people["bob"]
    env = cli_env(server, alice)

    uploaded = cli("upload", str(folder), "--chunk-size", "64KiB", "--json", env=env)
    assert uploaded.returncode == 0, uploaded.stderr
    (result,) = json_lines(uploaded.stdout)
    assert result["file_name"] == "run-42.tar" and not result["resumed"]
    mnemonic = result["mnemonic"]

    # The same folder again is recognised by its content and skipped, unless asked for.
    again = cli("upload", str(folder), "--chunk-size", "64KiB", env=env)
    assert again.returncode == 0, again.stderr
    assert f"already on the server as {mnemonic}" in again.stdout
    assert Dataset.objects.count() == 1
    forced = cli("upload", str(folder), "--chunk-size", "64KiB", "--allow-duplicate", "--json", env=env)
    assert json_lines(forced.stdout)[0]["mnemonic"] != mnemonic
    assert Dataset.objects.filter(state=DatasetState.AVAILABLE).count() == 2

    restored = tmp_path / "restored"
    got = cli("download", mnemonic, "--extract", "--out", str(restored), env=env)
    assert got.returncode == 0, got.stderr
    for relative in ("lane1/a.fastq", "lane1/deep/b.bin", "notes.txt"):
        assert (restored / "run-42" / relative).read_bytes() == (folder / relative).read_bytes()
    assert (restored / "run-42" / "empty").is_dir()

    # bob cannot read it until alice shares it; then his own key opens it.
    bob_env = cli_env(server, bob)
    refused = cli("download", mnemonic, "--out", str(tmp_path / "bob.tar"), env=bob_env)
    assert refused.returncode == 1
    assert f"dataset {mnemonic} does not exist, or you have no access to it" in refused.stderr
    shared = cli("share", mnemonic, "bob", "--level", "read", env=env)
    assert shared.returncode == 0, shared.stderr
    assert shared.stdout.strip() == f"shared {mnemonic} with bob (read)"
    assert Grant.objects.get(dataset__mnemonic=mnemonic, user=bob["user"]).level == "read"
    got = cli("download", mnemonic, "--out", str(tmp_path / "bob.tar"), "--server-side", env=bob_env)
    assert got.returncode == 0, got.stderr
    with tarfile.open(tmp_path / "bob.tar") as archive:
        assert archive.extractfile("run-42/notes.txt").read() == b"sample sheet\n"
    listed = cli("list", env=bob_env)
    assert mnemonic in listed.stdout


# --- bad input ------------------------------------------------------------------------------------


def test_bad_input_gives_clear_messages_and_leaves_nothing_behind(server, people, tmp_path):
    source = random_file(tmp_path / "data.bin", 3 * CHUNK + 10)
    alice = people["alice"]
    env = cli_env(server, alice)
    uploaded = cli("upload", str(source), "--chunk-size", "64KiB", "--json", env=env)
    mnemonic = json_lines(uploaded.stdout)[0]["mnemonic"]

    no_url = cli("list", env=cli_env(None, alice))
    assert no_url.returncode == 2 and "set PORTAL_URL or give --url" in no_url.stderr
    wrong_token = cli("list", env=cli_env(server, alice, PORTAL_TOKEN="rdp_not-a-token"))
    assert wrong_token.returncode == 1
    assert "did not accept the API token" in wrong_token.stderr and "PORTAL_TOKEN" in wrong_token.stderr
    down = cli(
        "list", "--retries", "0", env=cli_env(server, alice, PORTAL_URL=f"http://127.0.0.1:{free_port()}")
    )
    assert down.returncode == 1 and "connection refused" in down.stderr

    target = tmp_path / "out.bin"
    no_key = cli("download", mnemonic, "--out", str(target), env=cli_env(server, alice, PORTAL_KEY_FILE=""))
    assert no_key.returncode == 1 and "give --key FILE or set PORTAL_KEY_FILE" in no_key.stderr
    wrong_key = cli("download", mnemonic, "--out", str(target), "--key", str(people["mallory_key"]), env=env)
    assert wrong_key.returncode == 1
    assert "is not one the dataset's key is wrapped for" in wrong_key.stderr, wrong_key.stderr
    not_a_key = tmp_path / "junk.pem"
    not_a_key.write_text("hello")
    junk = cli("share", mnemonic, "bob", "--key", str(not_a_key), env=env)
    assert junk.returncode == 1 and "junk.pem" in junk.stderr
    unknown_user = cli("share", mnemonic, "nobody", env=env)
    assert unknown_user.returncode == 1 and "No such user" in unknown_user.stderr
    missing = cli("upload", str(tmp_path / "absent.bin"), env=env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not target.exists()

    # A chunk damaged on the server: both ways of downloading stop, name it, and keep nothing.
    dataset = Dataset.objects.get(mnemonic=mnemonic)
    chunk_file = Path(settings.PORTAL_DATA_DIR) / dataset.directory() / "chunks" / "000002.bin"
    damaged = bytearray(chunk_file.read_bytes())
    damaged[10] ^= 1
    chunk_file.write_bytes(bytes(damaged))
    here = cli("download", mnemonic, "--out", str(target), env=env)
    assert here.returncode == 1
    assert "chunk 2 failed authentication" in here.stderr and "nothing was kept" in here.stderr, here.stderr
    # The server stops its stream at the chunk (its log names it); the client sees a short body.
    there = cli("download", mnemonic, "--out", str(target), "--server-side", env=env)
    assert there.returncode == 1
    assert "fails its check" in there.stderr and "nothing was kept" in there.stderr, there.stderr
    assert not target.exists()
    assert not list(tmp_path.glob(".out.bin*"))
