"""`oms audit` finds each kind of broken invariant (on databases written by hand) and passes clean ones."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from oms.kernel.db import migrate
from oms.runtime.audit import run_audit
from tests.conftest import execute


@pytest.fixture
def dbs(make_database: Callable[[str], str]) -> tuple[str, str]:
    order_url, account_url = make_database("order"), make_database("account")
    migrate("order", order_url)
    migrate("account", account_url)
    return order_url, account_url


CUSTOMER = uuid.UUID(int=1)


def settled_buy(
    order_url: str, account_url: str, *, order_status: str = "MATCHED", res_status: str = "SETTLED"
) -> uuid.UUID:
    """A customer who deposited 100 TRY and bought 2 AAPL at 10: written as the services would."""
    order_id = uuid.uuid4()
    execute(
        order_url,
        f"INSERT INTO orders VALUES ('{order_id}', '{CUSTOMER}', 'AAPL', 'BUY', 2, 10, '{order_status}', "
        "NULL, true, now(), now())",
    )
    execute(
        account_url,
        f"""
        INSERT INTO assets (id, customer_id, asset_name, total_size, usable_size) VALUES
            (gen_random_uuid(), '{CUSTOMER}', 'TRY', 80, 80), (gen_random_uuid(), '{CUSTOMER}', 'AAPL', 2, 2);
        INSERT INTO reservations (id, order_id, customer_id, asset_name, amount, status)
            VALUES (gen_random_uuid(), '{order_id}', '{CUSTOMER}', 'TRY', 20, '{res_status}');
        INSERT INTO ledger (customer_id, asset_name, kind, delta_total, delta_usable, order_id) VALUES
            ('{CUSTOMER}', 'TRY', 'DEPOSIT', 100, 100, NULL),
            ('{CUSTOMER}', 'TRY', 'RESERVE', 0, -20, '{order_id}'),
            ('{CUSTOMER}', 'TRY', 'SETTLE_DEBIT', -20, 0, '{order_id}'),
            ('{CUSTOMER}', 'AAPL', 'SETTLE_CREDIT', 2, 2, '{order_id}');
        """,
    )
    return order_id


async def test_audit_consistent_databases_are_clean(dbs: tuple[str, str]) -> None:
    settled_buy(*dbs)
    report = await run_audit(*dbs, settle_seconds=0)
    assert report.violations == []
    assert (report.orders, report.balances, report.ledger_entries) == (1, 2, 4)


async def test_audit_balance_that_differs_from_its_ledger_is_a_violation(dbs: tuple[str, str]) -> None:
    settled_buy(*dbs)
    execute(
        dbs[1],
        "UPDATE assets SET total_size = total_size + 1, usable_size = usable_size + 1 "
        "WHERE asset_name = 'TRY'",
    )
    report = await run_audit(*dbs, settle_seconds=0)
    assert any("ledger sums" in v for v in report.violations)
    assert any("deposits − withdrawals" in v for v in report.violations)


async def test_audit_locked_amount_without_held_reservation_is_a_violation(dbs: tuple[str, str]) -> None:
    settled_buy(*dbs)
    execute(dbs[1], "UPDATE assets SET usable_size = usable_size - 5 WHERE asset_name = 'TRY'")
    report = await run_audit(*dbs, settle_seconds=0)
    assert any("HELD reservations" in v for v in report.violations)


async def test_audit_matched_order_with_released_reservation_is_a_violation(dbs: tuple[str, str]) -> None:
    order_id = settled_buy(*dbs, res_status="RELEASED")
    report = await run_audit(*dbs, settle_seconds=0)
    assert f"order {order_id}: MATCHED but its reservation was released" in report.violations


async def test_audit_order_stuck_in_flight_is_a_violation_after_the_settle_time(dbs: tuple[str, str]) -> None:
    order_id = settled_buy(*dbs, order_status="CANCELED", res_status="HELD")
    report = await run_audit(*dbs, settle_seconds=0.6)
    assert f"order {order_id}: still in flight after 1s" in report.violations
