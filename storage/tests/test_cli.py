"""The offline CLI, run as a subprocess without Django settings: hash, recover, keygen."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from storage import crypto, recovery

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [sys.executable, "-m", "storage.cli", *args],
        cwd=REPO,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(10_000))
    return path


def test_offline_modules_do_not_import_django():
    code = (
        "import sys, storage.cli, storage.crypto, storage.recovery, storage.mnemonics; "
        "print(sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_hash_matches_hash_file(data_file):
    expected, chunk_hashes = crypto.hash_file(data_file, 4096)
    result = run_cli("hash", str(data_file), "--chunk-size", "4KiB", "--chunks")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == expected
    assert lines[1:] == [f"{i}\t{h}" for i, h in enumerate(chunk_hashes)]

    default = run_cli("hash", str(data_file))
    assert default.stdout.strip() == crypto.hash_file(data_file)[0]


def test_hash_of_standard_input(data_file):
    result = run_cli("hash", "-", "--chunk-size", "1000", stdin="abc" * 1000)
    assert result.stdout.strip() == crypto.hash_file(io.BytesIO(b"abc" * 1000), 1000)[0]


def test_hash_usage_errors(data_file, tmp_path):
    assert run_cli("hash", str(data_file), "--chunk-size", "0").returncode == 2
    assert run_cli("hash", str(data_file), "--chunk-size", "lots").returncode == 2
    missing = run_cli("hash", str(tmp_path / "absent"))
    assert missing.returncode == 1 and "error:" in missing.stderr


def test_recover_reproduces_the_bytes(
    data_file, tmp_path, root_key_a, root_key_b, user_key, cheap_encrypted_pem
):
    recovery.encrypt_file_to_directory(
        data_file,
        tmp_path / "ds",
        "calm_coral_finch",
        crypto.new_data_key(),
        [root_key_a.public_key(), root_key_b.public_key()],
        4096,
    )
    key_file = tmp_path / "root.pem"
    key_file.write_text(crypto.private_key_pem(root_key_b))
    out = tmp_path / "recovered.bin"
    recovery_file = str(tmp_path / "ds" / "recovery.json")

    result = run_cli("recover", recovery_file, "--key", str(key_file), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == data_file.read_bytes()
    assert crypto.hash_file(data_file, 4096)[0] in result.stdout

    again = run_cli("recover", recovery_file, "--key", str(key_file), "--out", str(out))
    assert again.returncode == 2 and "exists" in again.stderr
    compact = tmp_path / "root.txt"
    compact.write_text(crypto.compact_private_key_text(root_key_a))
    forced = run_cli("recover", recovery_file, "--key", str(compact), "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr

    encrypted = tmp_path / "root-encrypted.pem"
    encrypted.write_text(cheap_encrypted_pem(root_key_a, b"open sesame"))
    args = ("recover", recovery_file, "--key", str(encrypted), "--out", str(out), "--force")
    no_password = run_cli(*args)
    assert no_password.returncode == 1 and "--password-file" in no_password.stderr
    password_file = tmp_path / "password.txt"
    password_file.write_text("open sesame\n")
    with_password = run_cli(*args, "--password-file", str(password_file))
    assert with_password.returncode == 0, with_password.stderr
    assert out.read_bytes() == data_file.read_bytes()

    other_key = tmp_path / "user.pem"
    other_key.write_text(crypto.private_key_pem(user_key))
    other_out = tmp_path / "nothing.bin"
    refused = run_cli("recover", recovery_file, "--key", str(other_key), "--out", str(other_out))
    assert refused.returncode == 1
    assert "not wrapped for this private key" in refused.stderr
    assert not other_out.exists()

    damaged = tmp_path / "ds" / "chunks" / "000001.bin"
    damaged.write_bytes(b"\0" * damaged.stat().st_size)
    failed = run_cli("recover", recovery_file, "--key", str(key_file), "--out", str(other_out))
    assert failed.returncode == 1 and "chunk 1 (chunks/000001.bin)" in failed.stderr
    assert not other_out.exists() and not list(tmp_path.glob(".nothing.bin*"))


def test_keygen(tmp_path):
    out = tmp_path / "me.pem"
    result = run_cli("keygen", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    private_key = crypto.load_private_key(out.read_text())
    assert out.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert private_key.key_size == 4096
    assert "compact key text: 1670 characters" in result.stdout
    assert crypto.public_key_pem(private_key.public_key()) in result.stdout
    assert crypto.public_key_fingerprint(private_key.public_key()) in result.stdout
    again = run_cli("keygen", "--out", str(out))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
