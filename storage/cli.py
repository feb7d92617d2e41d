"""Command-line tool for encrypted datasets: `python -m storage.cli <command> ...`.

Offline commands (no server, no database, no Django settings; this module imports only
`storage.crypto` and `storage.recovery`, so they work on an air-gapped machine):

    hash FILE [--chunk-size SIZE] [--chunks]     the dataset hash of a local file
    recover RECOVERY_FILE --key KEY --out FILE   decrypt a dataset with a root private key
    keygen --out FILE                            a new 4096-bit RSA key pair

Online commands talk to the portal's API (`storage.client`; still no Django). The server and
token come from --url/--token or PORTAL_URL/PORTAL_TOKEN; the private key that unwraps dataset
keys from --key or PORTAL_KEY_FILE:

    upload PATH... [--allow-duplicate]           files, and folders as tar archives; resumable
    download MNEMONIC [--out PATH] [--server-side] [--extract]
    share MNEMONIC USER [--level read|write]     unwrap the key here and grant USER access
    list [--uploading] [--mine]                  your datasets (mnemonic, state, size, name)
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from storage import client, crypto, recovery

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


def read_private_key_file(path: str, password_file: str | None) -> rsa.RSAPrivateKey:
    """A private key from `path` (PEM, JWK or compact text), with the password from the first line
    of `password_file`, or asked for on a terminal. Raises OSError or a `crypto.CryptoError`."""
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
    key = read_private_key_file(args.key, args.password_file)
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


# --- online commands ------------------------------------------------------------------------------


class UsageError(Exception):
    """Missing configuration (server URL, token): exit status 2."""


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b)?(/s)?\s*$", re.IGNORECASE)


def parse_rate(text: str) -> int:
    """Bytes per second from '500k', '10M', '1MiB/s'."""
    match = _RATE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 10M for 10 MiB/s)")
    return max(1, int(float(match.group(1)) * _UNITS[match.group(2).lower()]))


def parse_parallel(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 16:
        raise argparse.ArgumentTypeError(f"not a number from 1 to 16: {text!r}")
    return int(text)


def _portal(args: argparse.Namespace) -> client.Portal:
    url = args.url or os.environ.get("PORTAL_URL", "")
    token = args.token or os.environ.get("PORTAL_TOKEN", "")
    if not url:
        raise UsageError("no server: set PORTAL_URL or give --url (e.g. https://portal.example.org)")
    if not token:
        raise UsageError("no API token: set PORTAL_TOKEN or give --token (create one on your profile page)")
    quiet = args.quiet
    return client.Portal(
        url,
        token,
        retries=args.retries,
        on_retry=None if quiet else (lambda text: print(f"warning: {text}", file=sys.stderr, flush=True)),
    )


def _key_source(args: argparse.Namespace) -> client.KeySource | None:
    """Loads the private key on first use only (uploads seldom need it)."""
    path = args.key or os.environ.get("PORTAL_KEY_FILE", "")
    if not path:
        return None
    loaded: list[rsa.RSAPrivateKey] = []

    def load() -> rsa.RSAPrivateKey:
        if not loaded:
            try:
                loaded.append(read_private_key_file(path, args.password_file))
            except crypto.KeyFormatError as exc:
                raise client.ClientError(f"{path}: {exc}") from None
        return loaded[0]

    return load


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    return (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))


def _upload(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths]
    for path in paths:
        if not path.exists():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
    failed = 0
    with _portal(args) as portal:
        key_source = _key_source(args)
        for path in paths:
            workspace = None
            try:
                source, file_name = path, None
                if path.is_dir():
                    workspace = Path(tempfile.mkdtemp(prefix="portal-upload-", dir=args.tmp_dir))
                    _say(args)(f"{path}: packing the folder into a tar archive")
                    source = client.archive_folder(path.resolve(), workspace)
                    file_name = source.name
                result = client.upload_file(
                    portal,
                    source,
                    file_name=file_name,
                    name=args.name or "",
                    description=args.description or "",
                    project=args.project,
                    chunk_size=args.chunk_size,
                    allow_duplicate=args.allow_duplicate,
                    key_source=key_source,
                    rate_limit=args.limit_rate,
                    parallel=args.parallel,
                    quiet=args.quiet,
                    log=_say(args),
                )
            except client.ServerUnreachableError:
                raise
            except client.ClientError as exc:
                print(f"error: {path}: {exc}", file=sys.stderr)
                failed += 1
                continue
            finally:
                if workspace is not None:
                    shutil.rmtree(workspace, ignore_errors=True)
            result.path = str(path)
            if args.json:
                print(json.dumps(result.as_dict()), flush=True)
            elif result.skipped:
                print(
                    f"skipped {path}: already on the server as {result.duplicate_of} "
                    f"(dataset hash {result.sha256}; --allow-duplicate uploads it anyway)",
                    flush=True,
                )
            else:
                how = (
                    f"resumed, sent {result.sent} of {result.chunks} chunks"
                    if result.resumed
                    else (f"{result.chunks} chunks")
                )
                print(
                    f"uploaded {path} as {result.mnemonic}: {result.size:,} bytes, {how}; "
                    f"dataset hash {result.sha256}",
                    flush=True,
                )
    return 1 if failed else 0


def _local_name(file_name: str) -> str:
    name = Path(file_name.replace("\\", "/")).name
    if name in ("", ".", ".."):
        raise client.ClientError(f"the dataset's file name {file_name!r} cannot be used; give --out")
    return name


def _download(args: argparse.Namespace) -> int:
    with _portal(args) as portal:
        dataset = portal.call("GET", f"/datasets/{args.mnemonic}/")
        key_source = _key_source(args)
        if key_source is None:
            raise client.ClientError(
                f"{args.mnemonic}: downloading needs your private key to unwrap the dataset's key: "
                "give --key FILE or set PORTAL_KEY_FILE"
            )
        name = _local_name(dataset["file_name"])
        if args.extract:
            directory = (
                Path(args.out) if args.out else Path(name[:-4] if name.endswith(".tar") else name + ".d")
            )
            if directory.exists():
                print(f"error: {directory} exists; choose another --out", file=sys.stderr)
                return 2
            with tempfile.TemporaryDirectory(prefix=".portal-download-", dir=directory.parent or ".") as tmp:
                archive = Path(tmp) / name
                result = client.download_dataset(
                    portal,
                    args.mnemonic,
                    archive,
                    key_source=key_source,
                    server_side=args.server_side,
                    quiet=args.quiet,
                )
                result.extracted = client.extract_archive(archive, directory)
            result.path = str(directory)
        else:
            target = Path(args.out) if args.out else Path(name)
            if target.is_dir():
                target = target / name
            if target.exists() and not args.force:
                print(f"error: {target} exists (use --force to replace it)", file=sys.stderr)
                return 2
            result = client.download_dataset(
                portal,
                args.mnemonic,
                target,
                key_source=key_source,
                server_side=args.server_side,
                quiet=args.quiet,
            )
    where = "decrypted by the server" if result.server_side else "decrypted here"
    extra = f", extracted {len(result.extracted)} entries" if result.extracted else ""
    print(
        f"downloaded {result.mnemonic} to {result.path}: {result.size:,} bytes in {result.chunks} chunks, "
        f"{where}{extra}; dataset hash {result.sha256} (verified)",
        flush=True,
    )
    return 0


def _share(args: argparse.Namespace) -> int:
    with _portal(args) as portal:
        grant = client.share_dataset(
            portal, args.mnemonic, args.user, level=args.level, key_source=_key_source(args)
        )
    print(f"shared {args.mnemonic} with {grant['user']} ({grant['level']})", flush=True)
    return 0


def _list(args: argparse.Namespace) -> int:
    with _portal(args) as portal:
        rows = client.list_datasets(portal, state="uploading" if args.uploading else None, mine=args.mine)
    for row in rows:
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{row['mnemonic']}\t{row['state']}\t{row['size']}\t{row['sha256'] or '-'}\t{row['name']}")
    return 0


def _online_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("server and keys")
    group.add_argument("--url", help="the portal's address (default: $PORTAL_URL)")
    group.add_argument("--token", help="personal API token, read and write scopes (default: $PORTAL_TOKEN)")
    group.add_argument(
        "--key",
        metavar="PRIVATE_KEY_FILE",
        help="your private key: PEM, JWK or compact text (default: $PORTAL_KEY_FILE)",
    )
    group.add_argument(
        "--password-file", metavar="FILE", help="first line: the password of an encrypted PEM key"
    )
    group.add_argument(
        "--retries",
        type=int,
        default=6,
        metavar="N",
        help="repeat a request that could not reach the server N times, waiting 1, 2, 4 … s (default 6)",
    )
    group.add_argument("--quiet", "-q", action="store_true", help="no progress or notes on standard error")
    return common


def _add_online_commands(commands) -> None:
    common = _online_options()

    upload = commands.add_parser(
        "upload",
        parents=[common],
        help="upload files and folders (folders as tar archives); resumes unfinished uploads",
        description="Upload each PATH as a dataset. A folder is packed (recursively) into a tar archive "
        "first. An interrupted upload resumes when the same command runs again: only chunks the "
        "server lacks are sent. A file the server already holds (same dataset hash) is skipped.",
    )
    upload.add_argument("paths", nargs="+", metavar="PATH", help="files and folders")
    upload.add_argument("--name", help="the dataset's name (default: the file name)")
    upload.add_argument("--description", help="the dataset's description")
    upload.add_argument("--project", type=int, metavar="ID", help="attach the dataset to this project")
    upload.add_argument(
        "--chunk-size",
        type=parse_size,
        default=None,
        help="chunk size of a new upload, 64KiB to the server's limit (default 2MiB)",
    )
    upload.add_argument(
        "--allow-duplicate",
        action="store_true",
        help="upload even if you can already read a dataset with the same content",
    )
    upload.add_argument("--limit-rate", type=parse_rate, metavar="RATE", help="at most RATE per second (10M)")
    upload.add_argument(
        "--parallel",
        type=parse_parallel,
        default=client.DEFAULT_PARALLEL,
        metavar="N",
        help=f"chunks sent at once, 1 to 16 (default {client.DEFAULT_PARALLEL})",
    )
    upload.add_argument("--tmp-dir", metavar="DIR", help="where folders are packed (default: the system's)")
    upload.add_argument("--json", action="store_true", help="one JSON object per path on standard output")
    upload.set_defaults(handler=_upload)

    download = commands.add_parser(
        "download",
        parents=[common],
        help="download a dataset, decrypted and verified",
        description="Decrypt in this client (default: the chunks' ciphertext is fetched and each chunk's "
        "tag and hash checked) or on the server (--server-side). The file appears only once every "
        "check passed; a failed download leaves nothing behind.",
    )
    download.add_argument("mnemonic", metavar="MNEMONIC", help="the dataset, e.g. brave_green_ada")
    download.add_argument(
        "--out", "-o", metavar="PATH", help="file (or folder) to write; default: its file name"
    )
    download.add_argument(
        "--server-side", action="store_true", help="let the server decrypt (key sent over TLS)"
    )
    download.add_argument("--extract", action="store_true", help="unpack a folder archive into --out")
    download.add_argument("--force", action="store_true", help="replace the file if it exists")
    download.set_defaults(handler=_download)

    share = commands.add_parser(
        "share", parents=[common], help="grant a user access (the key is unwrapped here)"
    )
    share.add_argument("mnemonic", metavar="MNEMONIC")
    share.add_argument("user", metavar="USER", help="user name of the recipient")
    share.add_argument("--level", choices=["read", "write"], default="read")
    share.set_defaults(handler=_share)

    listing = commands.add_parser("list", parents=[common], help="list the datasets you can see")
    listing.add_argument("--uploading", action="store_true", help="only unfinished uploads")
    listing.add_argument("--mine", action="store_true", help="only datasets you own")
    listing.add_argument("--json", action="store_true", help="one JSON object per dataset")
    listing.set_defaults(handler=_list)


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

    _add_online_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; exit status 0 on success, 1 on a failed check, 2 on bad usage."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except client.ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except crypto.CryptoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
