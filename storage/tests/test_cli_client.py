"""Parts of the command-line client (`storage.client`): hashing streams, archives, progress,
configuration errors, and resuming an upload against Django's live test server (real HTTP)."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import os
import tarfile

import pytest
from django.utils import timezone

from portal.services.tokens import create_api_token
from storage import client, crypto
from storage.cli import parse_rate
from storage.models import Dataset, DatasetState
from storage.tests.helpers import CHUNK, pieces, put, start


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
@pytest.mark.parametrize("block", [1000, CHUNK, 5 * CHUNK])
def test_the_stream_hasher_gives_the_servers_dataset_hash(size, block):
    data = os.urandom(size)
    hasher = client._ChunkHasher(CHUNK)
    for offset in range(0, len(data), block):
        hasher.update(data[offset : offset + block])
    expected = crypto.dataset_hash([hashlib.sha256(p).digest() for p in pieces(data)])
    assert hasher.result() == expected
    assert expected == crypto.hash_file(io.BytesIO(data), CHUNK)[0]  # the offline hash, empty file too


def test_local_dataset_hash_of_an_empty_file_is_one_empty_chunk(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert client.local_dataset_hash(empty, CHUNK) == crypto.dataset_hash([hashlib.sha256(b"").digest()])


def test_folder_archives_are_reproducible_and_complete(tmp_path):
    folder = tmp_path / "run"
    (folder / "a" / "b").mkdir(parents=True)
    (folder / "a" / "b" / "deep.txt").write_text("deep")
    (folder / "top.bin").write_bytes(os.urandom(5000))
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = client.archive_folder(folder, tmp_path / "one")
    second = client.archive_folder(folder, tmp_path / "two")
    assert first.name == second.name == "run.tar"
    assert first.read_bytes() == second.read_bytes()  # so an interrupted folder upload can resume
    with tarfile.open(first) as archive:
        names = archive.getnames()
        assert {"run", "run/a", "run/a/b", "run/a/b/deep.txt", "run/top.bin"} <= set(names)
        assert all(member.uname == "" and member.uid == 0 for member in archive.getmembers())
    target = tmp_path / "restored"
    client.extract_archive(first, target)
    assert (target / "run" / "a" / "b" / "deep.txt").read_text() == "deep"
    with pytest.raises(client.ClientError, match="exists"):
        client.extract_archive(first, target)


def test_progress_prints_a_line_per_tenth_off_a_terminal():
    stream = io.StringIO()
    progress = client.Progress("file", 1000, stream=stream)
    for _ in range(100):
        progress.advance(10)
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11  # 0 %, 10 %, … 100 %
    assert lines[-1].startswith("file [########################] 100.0%")
    quiet = io.StringIO()
    silent = client.Progress("file", 10, stream=quiet, quiet=True)
    silent.advance(10)
    silent.finish()
    assert quiet.getvalue() == ""


def test_rates_and_configuration_errors():
    assert parse_rate("10M") == 10 * 1024**2 and parse_rate("512KiB/s") == 512 * 1024
    for bad in ("fast", "0", "-1M"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_rate(bad)
    with pytest.raises(client.ClientError, match="https://"):
        client.Portal("portal.example.org", "rdp_x")
    with pytest.raises(client.ClientError, match="PORTAL_TOKEN"):
        client.Portal("https://portal.example.org", "  ")


def test_api_errors_are_explained():
    def error(status, body):
        return client.api_error(client.Response(status, None, body), "http://p", "dataset a_b_c")

    unauthorized = error(401, b'{"detail": "Invalid token.", "code": "authentication_failed"}')
    assert "did not accept the API token" in str(unauthorized) and "PORTAL_TOKEN" in str(unauthorized)
    missing = error(404, b'{"detail": "Not found.", "code": "not_found"}')
    assert str(missing) == "Not found: dataset a_b_c does not exist, or you have no access to it"
    invalid = error(
        400, b'{"detail": "Invalid input.", "code": "invalid", "errors": {"user": ["No such user."]}}'
    )
    assert str(invalid) == "Invalid input. (user: No such user.)" and invalid.code == "invalid"
    html = error(502, b"<html>bad gateway</html>")
    assert "is this the portal's address?" in str(html)


@pytest.mark.django_db(transaction=True)
def test_resume_sends_only_the_missing_chunks_over_http(keyed, api, live_server, tmp_path, private_keys):
    data = os.urandom(5 * CHUNK + 99)
    source = tmp_path / "reads.fastq"
    source.write_bytes(data)
    owner = api("owner")
    mnemonic = start(owner, data).json()["mnemonic"]
    parts = pieces(data)
    for index in (0, 3):
        assert put(owner, mnemonic, index, parts[index]).status_code == 200
    # A chunk stored with other content (the local file changed since) is sent again.
    assert put(owner, mnemonic, 4, os.urandom(CHUNK)).status_code == 200

    _, token = create_api_token(
        keyed["owner"],
        name="cli",
        scopes=["read", "write"],
        expires_at=timezone.now() + dt.timedelta(hours=1),
    )
    with client.Portal(live_server.url, token, retries=0) as portal:
        result = client.upload_file(portal, source, quiet=True)
        assert (result.mnemonic, result.resumed, result.chunks, result.sent) == (mnemonic, True, 6, 4)
        assert result.sha256 == crypto.hash_file(source, CHUNK)[0] == Dataset.objects.get().sha256
        assert Dataset.objects.get().state == DatasetState.AVAILABLE

        # Uploading it again is skipped as a duplicate; with allow_duplicate a new dataset is made.
        again = client.upload_file(portal, source, chunk_size=CHUNK, quiet=True)
        assert again.skipped and again.duplicate_of == mnemonic
        # (one chunk at a time, over the caller's connection; the default sends several at once)
        forced = client.upload_file(
            portal, source, chunk_size=CHUNK, allow_duplicate=True, quiet=True, parallel=1
        )
        assert not forced.resumed and forced.mnemonic != mnemonic and forced.sent == 6
        assert Dataset.objects.get(mnemonic=forced.mnemonic).sha256 == result.sha256

        empty = tmp_path / "empty.txt"
        empty.write_bytes(b"")
        nothing = client.upload_file(portal, empty, quiet=True)
        assert nothing.sha256 == Dataset.objects.get(mnemonic=nothing.mnemonic).sha256

        out = tmp_path / "back.bin"
        key_source = client.fixed_key(private_keys["owner"])
        client.download_dataset(portal, mnemonic, out, key_source=key_source, quiet=True)
        assert out.read_bytes() == data
        with pytest.raises(client.ClientError, match="is not one the dataset's key is wrapped for"):
            client.download_dataset(
                portal,
                mnemonic,
                tmp_path / "x",
                key_source=client.fixed_key(private_keys["reader"]),
                quiet=True,
            )
        assert not (tmp_path / "x").exists() and not (tmp_path / ".x.partial").exists()
