"""A pytest plugin for `make mutation` (pyproject's [tool.mutmut]). mutmut runs the tests once in its own
process, then again in a process forked from it for each mutant:

- each of those runs gets a temporary folder of its own, removed when it ends: runs side by side may not
  share one (pytest empties the folder it is given), and thousands would fill the disk;
- they share one PostgreSQL server, started by mutmut's process (tests/conftest.py asks `shared_postgres`):
  starting a server for each mutant cost more than running its tests. Each test module still gets databases
  of its own, dropped when its run ends. (NATS is not shared: tests delete and create the same streams.)
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from contextlib import suppress
from pathlib import Path

import psutil
import psycopg2
import pytest
from psycopg2 import sql

from oms.runtime.ports import free_port
from oms.runtime.postgres import EmbeddedPostgres

ROOT = Path(tempfile.gettempdir()) / "oms-mutation"
_MUTMUT = os.getpid()  # mutmut's own process imports this first; the runs it forks inherit the number
_shared: EmbeddedPostgres | None = None
_started_by = 0


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    ROOT.mkdir(exist_ok=True)
    if os.getpid() == _MUTMUT:
        _remove_folders_of_killed_runs()
    config.option.basetemp = str(ROOT / str(os.getpid()))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(config.option.basetemp, ignore_errors=True)
    if _started_by == os.getpid() != _MUTMUT:  # a forked run that needed it first: nobody else will use it
        _stop()


def _remove_folders_of_killed_runs() -> None:
    """What runs mutmut killed (a mutant that made the tests hang) left behind."""
    for folder in ROOT.iterdir():
        pid = folder.name.removeprefix("postgres-")
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def shared_postgres() -> EmbeddedPostgres:
    """The server of every run of this mutmut process, started by the first that asks."""
    global _shared, _started_by
    if _shared is None:
        _shared = EmbeddedPostgres(ROOT / f"postgres-{os.getpid()}", free_port())
        _shared.start()
        _started_by = os.getpid()
        if _started_by == _MUTMUT:
            atexit.register(_stop)
    return _shared


def _stop() -> None:
    global _shared
    if _shared is not None and _started_by == os.getpid():
        _shared.stop()
        shutil.rmtree(_shared.data_dir, ignore_errors=True)
        _shared = None


def drop_if_shared(server: EmbeddedPostgres, databases: list[str]) -> None:
    """Drop the databases a run made on the shared server (a server of its own goes away with them)."""
    if server is not _shared or not databases:
        return
    conn = psycopg2.connect(server.url())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in databases:
                with suppress(psycopg2.Error):  # one a replication slot still holds stays
                    cur.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                    )
    finally:
        conn.close()
