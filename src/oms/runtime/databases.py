"""The databases for command-line tools (`oms admin`, `oms audit`), each as its own role (runtime/roles.py):
configured URLs, or the running system's embedded server, or — if nothing runs and the command may start it
(`oms admin create`) — the embedded server started (and provisioned, as `oms up` would) for the command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from oms.kernel.settings import Settings
from oms.runtime.ports import check_bindable
from oms.runtime.roles import connection_urls, connections


class NoRunningSystem(RuntimeError):
    """A command that needs the running system found none; the message says where it looked."""

    def __init__(self, settings: Settings, otherwise: str = "") -> None:
        where = settings.data_dir.resolve()
        super().__init__(
            f"no running system on {where} (start one with `oms up --data-dir {where}`{otherwise})"
        )


def running_state(settings: Settings) -> dict[str, object] | None:
    """What `oms up` on this data folder wrote about itself, if it is running."""
    state_file = settings.data_dir.resolve() / "run" / "state.json"
    if not state_file.exists():
        return None
    state: dict[str, object] = json.loads(state_file.read_text())
    pid = state.get("pid")
    return state if isinstance(pid, int) and psutil.pid_exists(pid) else None


def _external(settings: Settings) -> bool:
    """Any database URL configured means servers of one's own: never the embedded one."""
    return settings.external or any(getattr(settings, f"{c.name}_database_url") for c in connections())


@contextmanager
def database_urls(
    settings: Settings, names: tuple[str, ...], *, may_start: bool = True
) -> Iterator[dict[str, str]]:
    """The URL of each connection in `names` (`auth`, `audit_order`, …), for the duration of the block.
    Without `may_start`, NoRunningSystem at once when no system runs on the data folder (nothing is
    created)."""
    if _external(settings):
        yield {name: settings.database_url(name) for name in names}
        return
    state = running_state(settings) or {}
    pg_port = state.get("pg_port")  # None also when the running system uses servers of its own
    pg_ports = state.get("pg_ports")  # `oms up --cluster`: a server per database
    if isinstance(pg_ports, dict):
        yield _cluster_urls(settings, pg_ports, names)
        return
    if not isinstance(pg_port, int) and (settings.data_dir / "pg-order").exists():
        # `oms up --cluster`'s folder: a server per database, started by it alone.
        raise NoRunningSystem(settings, ", with --cluster as this folder was made")
    if not isinstance(pg_port, int) and not may_start:
        settings_names = " and ".join(f"OMS_{name.upper()}_DATABASE_URL" for name in names)
        raise NoRunningSystem(settings, f", or set {settings_names}")
    from oms.runtime.postgres import EmbeddedPostgres  # psycopg2: not needed to say there is no system

    data_dir = settings.data_dir.resolve()
    wanted = [c for c in connections() if c.name in names]
    if isinstance(pg_port, int):
        server = EmbeddedPostgres(data_dir, pg_port, settings.host)
        yield connection_urls(server.url(), settings.secrets_dir, wanted)
        return
    from oms.runtime.provision import provision  # alembic: a second's import, only when it is needed

    check_bindable(settings.host, settings.pg_port, "PostgreSQL", "OMS_PG_PORT")
    server = EmbeddedPostgres(data_dir, settings.pg_port, settings.host)
    server.start()
    try:
        urls = provision(server.url(), settings.secrets_dir)
        yield {name: urls[name] for name in names}
    finally:
        server.stop()


def _cluster_urls(settings: Settings, pg_ports: dict[str, int], names: tuple[str, ...]) -> dict[str, str]:
    """The URL of each connection in `names` on the server of its database (`oms up --cluster`)."""
    from oms.runtime.postgres import EmbeddedPostgres

    urls: dict[str, str] = {}
    for connection in (c for c in connections() if c.name in names):
        server = EmbeddedPostgres(
            settings.data_dir, pg_ports[connection.database], settings.host, connection.database
        )
        urls |= connection_urls(server.url(), settings.secrets_dir, [connection])
    return urls
