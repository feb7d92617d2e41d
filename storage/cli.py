"""Command-line tool for encrypted datasets: `python -m storage.cli <command> ...`.

Offline commands (no server, no database, no Django settings; this module imports only
`storage.crypto` and `storage.recovery`, so they work on an air-gapped machine):

    hash FILE [--chunk-size SIZE] [--chunks]     the dataset hash of a local file
    recover RECOVERY_FILE --key KEY --out FILE   decrypt a dataset with a root private key
    keygen --out FILE                            a new 4096-bit RSA key pair

Online commands (upload, download, share) are added to `build_parser` as subparsers.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from storage import crypto, recovery

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """Bytes from '2097152', '2M', '2MiB', '512k' (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2097152, 2M, 512KiB)")
    size = int(match.group(1)) * _UNITS[match.group(2).lower()]
    try:
        return crypto.check_chunk_size(size)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _hash(args: argparse.Namespace) -> int:
    if args.file == "-":
        digest, chunk_hashes = crypto.hash_file(sys.stdin.buffer, args.chunk_size)
    else:
        digest, chunk_hashes = crypto.hash_file(args.file, args.chunk_size)
    print(digest)
    if args.chunks:
        for index, chunk_digest in enumerate(chunk_hashes):
            print(f"{index}\t{chunk_digest}")
    return 0


def _read_private_key(path: str, password_file: str | None) -> rsa.RSAPrivateKey:
    text = Path(path).read_text(encoding="utf-8")
    if password_file is not None:
        lines = Path(password_file).read_text(encoding="utf-8").splitlines()
        return crypto.load_private_key(text, password=lines[0] if lines else "")
    try:
        return crypto.load_private_key(text)
    except crypto.KeyPasswordRequiredError:
        if not sys.stdin.isatty():
            raise crypto.KeyPasswordRequiredError(
                "The private key is encrypted; give --password-file or run on a terminal."
            ) from None
    return crypto.load_private_key(text, password=getpass.getpass(f"Password for {path}: "))


def _recover(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"error: {out} exists (use --force to replace it)", file=sys.stderr)
        return 2
    key = _read_private_key(args.key, args.password_file)
    # Plaintext goes to a partial file (owner-only), renamed only once every check has passed.
    partial = out.with_name(f".{out.name}.partial")
    try:
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            result = recovery.recover_dataset(args.recovery_file, key, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    print(f"recovered {result.file_name!r}: {result.size} bytes in {result.chunks} chunks to {out}")
    print(f"dataset hash {result.dataset_hash} (verified)")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists():
        print(f"error: {out} exists; refusing to overwrite a private key", file=sys.stderr)
        return 2
    private_key = crypto.generate_private_key()
    pem = crypto.private_key_pem(private_key).encode("ascii")
    # Created readable by the owner only, and never truncating an existing file.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_key = private_key.public_key()
    print(f"private key (PKCS#8 PEM) written to {out}; keep it secret and backed up.")
    print(f"public key fingerprint: {crypto.public_key_fingerprint(public_key)}")
    print(f"compact key text: {len(crypto.compact_private_key_text(private_key))} characters")
    print(crypto.public_key_pem(public_key), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; online subcommands are added here too."""
    parser = argparse.ArgumentParser(
        prog="python -m storage.cli", description="Encrypted datasets of the research data portal."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    hash_cmd = commands.add_parser("hash", help="print the dataset hash of a local file (offline)")
    hash_cmd.add_argument("file", metavar="FILE", help="the file ('-' for standard input)")
    hash_cmd.add_argument(
        "--chunk-size",
        type=parse_size,
        default=crypto.DEFAULT_CHUNK_SIZE,
        help="chunk size in bytes or with a unit (default 2MiB; must match the dataset's)",
    )
    hash_cmd.add_argument("--chunks", action="store_true", help="also print each chunk's SHA-256")
    hash_cmd.set_defaults(handler=_hash)

    recover_cmd = commands.add_parser(
        "recover", help="decrypt a dataset from its recovery file with a root private key (offline)"
    )
    recover_cmd.add_argument("recovery_file", metavar="RECOVERY_FILE", help="the dataset's recovery.json")
    recover_cmd.add_argument(
        "--key",
        required=True,
        metavar="PRIVATE_KEY_FILE",
        help="root private key: PEM, JWK or compact text",
    )
    recover_cmd.add_argument(
        "--password-file",
        metavar="FILE",
        help="file whose first line is the password of an encrypted PEM key (default: ask on the terminal)",
    )
    recover_cmd.add_argument("--out", required=True, metavar="FILE", help="where to write the plaintext")
    recover_cmd.add_argument("--force", action="store_true", help="replace FILE if it exists")
    recover_cmd.set_defaults(handler=_recover)

    keygen_cmd = commands.add_parser("keygen", help="create a 4096-bit RSA key pair (offline)")
    keygen_cmd.add_argument("--out", required=True, metavar="FILE", help="private key file to create")
    keygen_cmd.set_defaults(handler=_keygen)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; exit status 0 on success, 1 on a failed check, 2 on bad usage."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except crypto.CryptoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
