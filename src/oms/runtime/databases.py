"""The service databases for command-line tools (`oms admin`, `oms audit`): configured URLs, or the
running system's embedded server, or — if nothing runs — the embedded server started for the command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from oms.kernel.settings import SERVICES, Settings
from oms.runtime.ports import check_bindable
from oms.runtime.postgres import EmbeddedPostgres


def running_state(settings: Settings) -> dict[str, object] | None:
    """What `oms up` on this data folder wrote about itself, if it is running."""
    state_file = settings.data_dir.resolve() / "run" / "state.json"
    if not state_file.exists():
        return None
    state: dict[str, object] = json.loads(state_file.read_text())
    pid = state.get("pid")
    return state if isinstance(pid, int) and psutil.pid_exists(pid) else None


@contextmanager
def service_databases(settings: Settings) -> Iterator[dict[str, str]]:
    """URL of each service's database, by service name, for the duration of the block."""
    if settings.external or settings.auth_database_url:
        yield {service: settings.database_url(service) for service in SERVICES}
        return
    data_dir = settings.data_dir.resolve()
    state = running_state(settings)
    if state is not None and isinstance(state.get("pg_port"), int):
        server = EmbeddedPostgres(data_dir, int(state["pg_port"]), settings.host)  # type: ignore[call-overload]
        yield {service: server.url(service) for service in SERVICES}
        return
    check_bindable(settings.host, settings.pg_port, "PostgreSQL", "OMS_PG_PORT")
    server = EmbeddedPostgres(data_dir, settings.pg_port, settings.host)
    server.start()
    try:
        server.create_databases(list(SERVICES))
        yield {service: server.url(service) for service in SERVICES}
    finally:
        server.stop()
