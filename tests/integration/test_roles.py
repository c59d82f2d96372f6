"""The database roles (runtime/roles.py, runtime/provision.py) on a real PostgreSQL server of their own (roles
are per server): who may connect where and do what, and the upgrade of databases an older version made as the
superuser."""

from __future__ import annotations

import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg2
import psycopg2.errors
import pytest

from oms.kernel.db import migrate
from oms.kernel.relay import RelayConfigError, prepare_database
from oms.kernel.settings import SERVICES
from oms.kernel.topology import slot_name
from oms.runtime.ports import free_port
from oms.runtime.postgres import EmbeddedPostgres
from oms.runtime.provision import provision
from oms.runtime.roles import AUDIT, database_url, relay_role, service_role
from tests.conftest import execute


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    running = EmbeddedPostgres(tmp_path_factory.mktemp("pg-roles"), free_port())
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def urls(server: EmbeddedPostgres) -> dict[str, str]:
    return provision(server.url(), server.data_dir / "secrets")


def refused(url: str, statement: str) -> bool:
    """True when `statement` run at `url` is refused for want of a privilege."""
    try:
        execute(url, statement)
    except psycopg2.errors.InsufficientPrivilege:
        return True
    return False


def read_write(statement: str) -> str:
    """`statement` in a transaction that is not read-only, whatever the role's default."""
    return f"BEGIN READ WRITE; {statement}; COMMIT"


def cannot_connect(url: str) -> bool:
    try:
        psycopg2.connect(url).close()
    except psycopg2.OperationalError as exc:
        return "permission denied for database" in str(exc)
    return False


def tables(url: str) -> list[str]:
    return [
        str(name) for (name,) in execute(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    ]


def test_no_role_of_oms_is_superuser_and_only_the_relays_replicate(
    server: EmbeddedPostgres, urls: dict[str, str]
) -> None:
    rows = execute(
        server.url(),
        "SELECT rolname, rolsuper, rolreplication, rolcreatedb, rolcreaterole, rolbypassrls, rolcanlogin"
        " FROM pg_roles WHERE rolname LIKE 'oms\\_%'",
    )
    attributes = {str(row[0]): tuple(row[1:]) for row in rows}
    for service in SERVICES:
        assert attributes[service_role(service).name] == (False, False, False, False, False, True)
    for service in ("order", "account"):
        assert attributes[relay_role(service).name] == (False, True, False, False, False, True)
    assert attributes[AUDIT.name] == (False, False, False, False, False, True)


def test_each_service_role_connects_to_its_own_database_only(urls: dict[str, str]) -> None:
    for service in SERVICES:
        assert execute(urls[service], "SELECT current_user") == [(service_role(service).name,)]
        for other in set(SERVICES) - {service}:
            assert cannot_connect(database_url(urls[service], other)), (service, other)


def test_a_service_role_owns_its_database_and_everything_in_it(
    server: EmbeddedPostgres, urls: dict[str, str]
) -> None:
    for service in SERVICES:
        owners = execute(
            server.url(service),
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
            " WHERE relnamespace = 'public'::regnamespace"
            " UNION SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()",
        )
        assert owners == [(service_role(service).name,)]


def test_the_relay_role_reads_and_deletes_its_outbox_and_keeps_its_slot_row_only(
    urls: dict[str, str],
) -> None:
    for service, state_table in (("order", "orders"), ("account", "assets")):
        relay = urls[f"{service}_relay"]
        assert execute(relay, "SELECT count(*) FROM outbox") == [(0,)]
        execute(relay, "DELETE FROM outbox WHERE false")
        execute(relay, "INSERT INTO relay_slots VALUES ('test-slot', false) ON CONFLICT DO NOTHING")
        execute(relay, "UPDATE relay_slots SET leftovers_published = true WHERE slot = 'test-slot'")
        assert refused(relay, f"SELECT * FROM {state_table}")
        assert refused(
            relay, "INSERT INTO outbox (id, subject, payload) VALUES (gen_random_uuid(), 's', '{}')"
        )
        for table in set(tables(relay)) - {"relay_slots"}:
            assert refused(relay, f"UPDATE {table} SET {_first_column(relay, table)} = NULL WHERE false"), (
                table
            )
        assert refused(relay, "CREATE TABLE mine (n int)")
        other = "account" if service == "order" else "order"
        assert cannot_connect(database_url(relay, other)) and cannot_connect(database_url(relay, "auth"))


def _first_column(url: str, table: str) -> str:
    [(column,)] = execute(
        url,
        "SELECT attname FROM pg_attribute WHERE attnum = 1"
        f" AND attrelid = (SELECT oid FROM pg_class WHERE relname = '{table}'"
        " AND relnamespace = 'public'::regnamespace)",
    )
    return str(column)


def test_the_audit_role_reads_every_table_and_writes_none(urls: dict[str, str]) -> None:
    for service in ("order", "account"):
        audit = urls[f"audit_{service}"]
        assert execute(audit, "SHOW default_transaction_read_only") == [("on",)]
        for table in tables(audit):
            execute(audit, f"SELECT * FROM {table} LIMIT 1")
            # Not only read-only by default: without the privilege, even a read-write transaction may not.
            assert refused(audit, read_write(f"DELETE FROM {table} WHERE false")), table
        assert refused(audit, read_write("CREATE TABLE mine (n int)"))
        assert cannot_connect(database_url(audit, "auth"))


def test_the_audit_role_reads_tables_that_later_migrations_add(urls: dict[str, str]) -> None:
    table = f"later_{uuid.uuid4().hex[:8]}"
    execute(urls["account"], f"CREATE TABLE {table} (n int); INSERT INTO {table} VALUES (7)")
    assert execute(urls["audit_account"], f"SELECT n FROM {table}") == [(7,)]
    assert refused(urls["account_relay"], f"SELECT n FROM {table}")
    execute(urls["account"], f"DROP TABLE {table}")


def test_passwords_are_private_files_kept_across_provisions(
    server: EmbeddedPostgres, urls: dict[str, str]
) -> None:
    secrets = server.data_dir / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    files = sorted(p.name for p in secrets.iterdir())
    assert files == sorted(
        [
            "pg-password",
            "pg-audit-password",
            *(f"pg-{s}-password" for s in SERVICES),
            *(f"pg-{s}-relay-password" for s in ("order", "account")),
        ]
    )
    assert all(stat.S_IMODE((secrets / name).stat().st_mode) == 0o600 for name in files)
    assert provision(server.url(), secrets) == urls


def test_provisioning_again_takes_back_what_was_granted_by_hand(
    server: EmbeddedPostgres, urls: dict[str, str]
) -> None:
    execute(server.url(), "ALTER ROLE oms_order SUPERUSER REPLICATION")
    execute(
        server.url("order"), "GRANT INSERT ON outbox TO oms_order_relay; GRANT UPDATE ON orders TO oms_audit"
    )
    provision(server.url(), server.data_dir / "secrets")
    assert execute(
        server.url(), "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = 'oms_order'"
    ) == [(False, False)]
    assert refused(
        urls["order_relay"], "INSERT INTO outbox (id, subject, payload) VALUES (gen_random_uuid(), 's', '{}')"
    )
    assert refused(urls["audit_order"], read_write("UPDATE orders SET reason = 'x'"))


async def test_the_relay_finds_the_publication_it_may_not_create(urls: dict[str, str]) -> None:
    execute(urls["order"], "DROP PUBLICATION oms_outbox")
    conn = await asyncpg.connect(urls["order_relay"])
    try:
        with pytest.raises(
            RelayConfigError, match=r"no publication oms_outbox.*run the service's migrations"
        ):
            await prepare_database(conn, slot_name("order"))
    finally:
        await conn.close()
        execute(urls["order"], "CREATE PUBLICATION oms_outbox FOR TABLE outbox WITH (publish = 'insert')")


def test_databases_an_older_version_made_as_the_superuser_are_handed_to_their_roles(tmp_path: Path) -> None:
    """The old layout: every database and object owned by the superuser; the upgrade moves them all, and
    keeps the data and the replication slots."""
    server = EmbeddedPostgres(tmp_path / "old", free_port())
    server.start()
    try:
        server.create_databases(list(SERVICES))
        for service in SERVICES:
            migrate(service, server.url(service))
        execute(
            server.url("account"),
            "CREATE VIEW balances AS SELECT * FROM assets; CREATE SEQUENCE loose;"
            " INSERT INTO ledger (customer_id, asset_name, kind, delta_total, delta_usable)"
            " VALUES (gen_random_uuid(), 'TRY', 'DEPOSIT', 5, 5)",
        )
        execute(
            server.url("account"),
            "SELECT pg_create_logical_replication_slot('oms_account_outbox', 'pgoutput')",
        )
        upgraded = provision(server.url(), server.data_dir / "secrets")
        foreign = execute(
            server.url("account"),
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relowner <> 'oms_account'::regrole"
            " UNION ALL SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
            " AND proowner <> 'oms_account'::regrole"
            " UNION ALL SELECT pubname FROM pg_publication WHERE pubowner <> 'oms_account'::regrole",
        )
        assert foreign == []
        assert execute(upgraded["audit_account"], "SELECT sum(delta_total) FROM ledger") == [(5,)]
        assert execute(upgraded["audit_account"], "SELECT count(*) FROM balances") == [(0,)]
        slots = execute(server.url(), "SELECT slot_name, database FROM pg_replication_slots")
        assert slots == [("oms_account_outbox", "account")]
        execute(
            upgraded["account"],
            "INSERT INTO ledger (customer_id, asset_name, kind, delta_total, delta_usable)"
            " VALUES (gen_random_uuid(), 'TRY', 'DEPOSIT', 1, 1)",
        )
        with pytest.raises(psycopg2.errors.RaiseException, match="append-only"):
            execute(upgraded["account"], "DELETE FROM ledger")
    finally:
        server.stop()
