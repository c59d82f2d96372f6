"""Real servers for the whole test session: an embedded PostgreSQL and a NATS JetStream server, started
on free ports under a temporary folder (never the machine's own 5432/4222). `make test` runs the tests on
parallel workers (pytest-xdist, whole modules at a time): each worker has its own servers and picks ports
in its own range."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest

from oms.kernel.nats_access import NatsAccess
from oms.kernel.permissions import OPERATOR
from oms.runtime.nats import EmbeddedNats
from oms.runtime.ports import FREE_PORTS_VARIABLE, free_port, split_pick_range
from oms.runtime.postgres import EmbeddedPostgres
from tests import mutation_runs

TIERS = ("e2e", "integration", "unit")


def pytest_configure(config: pytest.Config) -> None:
    if worker := os.environ.get("PYTEST_XDIST_WORKER"):
        workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
        os.environ[FREE_PORTS_VARIABLE] = split_pick_range(int(worker.removeprefix("gw")), workers)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first — those marked `long`, then the other e2e, integration, unit — so that a
    parallel run, which hands out whole modules as its workers free up, does not start a long one last.
    (A stable sort: each module's tests stay together and in their order.)"""

    def weight(item: pytest.Item) -> tuple[bool, int]:
        tier = item.path.parent.name
        return item.get_closest_marker("long") is None, TIERS.index(tier) if tier in TIERS else len(TIERS)

    items.sort(key=weight)


@pytest.fixture(scope="session")
def pg_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedPostgres]:
    if request.config.pluginmanager.has_plugin(mutation_runs.__name__):  # `make mutation`: one for all runs
        yield mutation_runs.shared_postgres()
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_identity(nats_server: EmbeddedNats) -> Callable[[str], NatsAccess]:
    """Each component's credentials on the session's NATS server (its nkey seed), by identity name."""
    return nats_server.access


@pytest.fixture(scope="session")
def operator(nats_server: EmbeddedNats) -> NatsAccess:
    """The operator identity: the only one that may create, change, purge or delete streams."""
    return nats_server.access(OPERATOR)


@pytest.fixture(scope="session")
def make_database(pg_server: EmbeddedPostgres) -> Iterator[Callable[[str], str]]:
    """Create a new empty database and return its URL; each test module gets its own."""
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        pg_server.create_databases([name])
        made.append(name)
        return pg_server.url(name)

    yield make
    mutation_runs.drop_if_shared(pg_server, made)


def execute(url: str, sql: str) -> list[tuple[object, ...]]:
    """Run one statement synchronously (for test set-up and assertions)."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "oms-data"
