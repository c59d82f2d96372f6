"""`oms up` on a data folder made by the previous version, where everything connected as the superuser and
owned every database and object: it starts, hands each database to its service's role, keeps every row and
replication slot, and the relays resume from their slots."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from oms.kernel.db import migrate
from oms.kernel.events import Envelope, OrderCreated
from oms.kernel.money import Side
from oms.kernel.settings import SERVICES
from oms.kernel.topology import RELAYED, slot_name
from oms.runtime.ports import free_port
from oms.runtime.postgres import EmbeddedPostgres
from oms.runtime.roles import service_role
from tests.conftest import execute
from tests.e2e.api import Api, User
from tests.e2e.conftest import RunningSystem, system_env

pytestmark = pytest.mark.e2e

OLGA = uuid.UUID(int=0x0142)
SETTLED_ORDER, PENDING_ORDER = uuid.UUID(int=0x0201), uuid.UUID(int=0x0202)

# The schema the previous version ran with: its newest migration of each service.
PREVIOUS_VERSION = {"auth": "0001", "order": "0002", "account": "0002"}


def olgas_aapl_buy(order_id: uuid.UUID, *, size: int, price: int, status: str) -> str:
    reserved = status == "MATCHED"
    return (
        f"INSERT INTO orders VALUES ('{order_id}', '{OLGA}', 'AAPL', 'BUY', {size}, {price}, '{status}',"
        f" NULL, {reserved}, now(), now())"
    )


def write_settled_buy(server: EmbeddedPostgres) -> None:
    """Olga deposited 1000 TRY and bought 2 AAPL at 10, long ago."""
    password_hash = PasswordHasher().hash("olga-password")
    execute(
        server.url("auth"),
        f"INSERT INTO users (id, username, password_hash, role) VALUES ('{OLGA}', 'olga', "
        f"'{password_hash}', 'customer')",
    )
    execute(server.url("order"), olgas_aapl_buy(SETTLED_ORDER, size=2, price=10, status="MATCHED"))
    execute(
        server.url("account"),
        f"""
        INSERT INTO assets (id, customer_id, asset_name, total_size, usable_size) VALUES
            (gen_random_uuid(), '{OLGA}', 'TRY', 980, 980), (gen_random_uuid(), '{OLGA}', 'AAPL', 2, 2);
        INSERT INTO reservations (id, order_id, customer_id, asset_name, amount, status)
            VALUES (gen_random_uuid(), '{SETTLED_ORDER}', '{OLGA}', 'TRY', 20, 'SETTLED');
        INSERT INTO ledger (customer_id, asset_name, kind, delta_total, delta_usable, order_id) VALUES
            ('{OLGA}', 'TRY', 'DEPOSIT', 1000, 1000, NULL),
            ('{OLGA}', 'TRY', 'RESERVE', 0, -20, '{SETTLED_ORDER}'),
            ('{OLGA}', 'TRY', 'SETTLE_DEBIT', -20, 0, '{SETTLED_ORDER}'),
            ('{OLGA}', 'AAPL', 'SETTLE_CREDIT', 2, 2, '{SETTLED_ORDER}');
        """,
    )


def write_order_placed_at_the_stop(server: EmbeddedPostgres) -> None:
    """An order placed just before the old system stopped: its `order.created` is still in the outbox, after
    the position the order relay had confirmed in its slot."""
    event = Envelope.of(
        OrderCreated(
            order_id=PENDING_ORDER,
            customer_id=OLGA,
            occurred_at=datetime.now(UTC),
            asset_name="AAPL",
            side=Side.BUY,
            size=Decimal(1),
            price=Decimal(30),
        )
    )
    execute(
        server.url("order"),
        olgas_aapl_buy(PENDING_ORDER, size=1, price=30, status="PENDING")
        + f"; INSERT INTO outbox (id, subject, payload) VALUES ('{event.id}', '{event.subject}',"
        f" '{event.to_json().decode()}')",
    )


def make_old_data_folder(data_dir: Path) -> None:
    """What the previous version left: only the superuser, databases created and migrated by it, its data, and
    the relays' slots (made by relays that connected as the superuser)."""
    server = EmbeddedPostgres(data_dir, free_port())
    server.start()
    try:
        server.create_databases(list(PREVIOUS_VERSION))
        for service, revision in PREVIOUS_VERSION.items():
            migrate(service, server.url(service), revision)
        write_settled_buy(server)
        for service in RELAYED:
            execute(server.url(service), f"INSERT INTO relay_slots VALUES ('{slot_name(service)}', true)")
            execute(
                server.url(service),
                f"SELECT pg_create_logical_replication_slot('{slot_name(service)}', 'pgoutput')",
            )
        write_order_placed_at_the_stop(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    data_dir = tmp_path_factory.mktemp("old") / "data"
    make_old_data_folder(data_dir)
    running = RunningSystem(data_dir, system_env())
    running.start("--execution", "immediate")  # the previous version's only mode: its orders keep their terms
    yield running
    if running.process is not None:
        running.stop()


def superuser_url(system: RunningSystem, database: str) -> str:
    return EmbeddedPostgres(system.data_dir, int(system.env["OMS_PG_PORT"])).url(database)


def test_every_database_and_object_now_belongs_to_its_service_role(upgraded: RunningSystem) -> None:
    for service in SERVICES:
        owners = execute(
            superuser_url(upgraded, service),
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " UNION SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
            " UNION SELECT pg_get_userbyid(pubowner) FROM pg_publication"
            " UNION SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()",
        )
        assert owners == [(service_role(service).name,)]


def test_old_data_is_all_there_and_the_order_left_in_the_outbox_completes(upgraded: RunningSystem) -> None:
    api = Api(upgraded)
    olga, admin = User(str(OLGA), "olga", api.login("olga", "olga-password")), api.admin()
    assert api.wait_order(olga, str(PENDING_ORDER))["status"] == "MATCHED"
    assert api.get_order(olga, str(SETTLED_ORDER)).json()["status"] == "MATCHED"
    assert api.wait_balances(admin, olga, {"TRY": (950, 950), "AAPL": (3, 3)}) == {
        "TRY": (Decimal(950), Decimal(950)),
        "AAPL": (Decimal(3), Decimal(3)),
    }
    assert [e["kind"] for e in api.ledger_of(admin, olga)][-4:] == [
        "SETTLE_CREDIT",
        "SETTLE_DEBIT",
        "RESERVE",
        "DEPOSIT",
    ]


def test_the_relays_resumed_from_their_slots(upgraded: RunningSystem) -> None:
    api = Api(upgraded)
    olga = User(str(OLGA), "olga", api.login("olga", "olga-password"))
    api.wait_order(olga, str(PENDING_ORDER))
    slots = execute(
        superuser_url(upgraded, "postgres"), "SELECT slot_name FROM pg_replication_slots ORDER BY 1"
    )
    assert slots == sorted((slot_name(s),) for s in RELAYED)
    for service in RELAYED:
        log = (upgraded.data_dir / "logs" / f"relay-{service}.log").read_text()
        assert "created replication slot" not in log and "left from before the slot existed" not in log


def test_a_new_order_is_matched_and_the_audit_is_clean(upgraded: RunningSystem) -> None:
    api = Api(upgraded)
    olga, admin = User(str(OLGA), "olga", api.login("olga", "olga-password")), api.admin()
    api.wait_order(olga, str(PENDING_ORDER))
    limit = api.marketable(olga, "BUY")  # a new order must name a price in the band now
    assert api.wait_order(olga, api.place(olga, "BUY", "AAPL", "1", limit))["status"] == "MATCHED"
    left = 950 - Decimal(limit)  # immediate: at its limit
    assert api.wait_balances(admin, olga, {"TRY": (left, left), "AAPL": (4, 4)})["TRY"] == (left, left)
    audit = subprocess.run(
        [sys.executable, "-m", "oms", "audit", "--data-dir", str(upgraded.data_dir)],
        env=upgraded.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "every invariant holds" in audit.stdout
