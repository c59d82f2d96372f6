"""`oms audit` finds each kind of broken invariant (on databases written by hand) and passes clean ones."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal

import psycopg2.errors
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


CUSTOMER, ADMIN = uuid.UUID(int=1), uuid.UUID(int=2)


def settled_buy(
    order_url: str,
    account_url: str,
    *,
    order_status: str = "MATCHED",
    res_status: str = "SETTLED",
    executed: Decimal = Decimal(10),
) -> uuid.UUID:
    """A customer who deposited 100 TRY and bought 2 AAPL with a limit of 10 (20 TRY reserved), executed at
    `executed` (what it did not spend released): written as the services would."""
    order_id = uuid.uuid4()
    executed_price = executed if order_status == "MATCHED" else "NULL"
    spent = 2 * executed
    execute(
        order_url,
        "INSERT INTO orders (id, customer_id, asset_name, side, size, price, status, reason, reserved, "
        f"created_at, updated_at, executed_price) VALUES ('{order_id}', '{CUSTOMER}', 'AAPL', 'BUY', 2, 10, "
        f"'{order_status}', NULL, true, now(), now(), {executed_price})",
    )
    release = f", ('{CUSTOMER}', 'TRY', 'RELEASE', 0, {20 - spent}, '{order_id}')" if spent < 20 else ""
    execute(
        account_url,
        f"""
        INSERT INTO assets (id, customer_id, asset_name, total_size, usable_size) VALUES
            (gen_random_uuid(), '{CUSTOMER}', 'TRY', {100 - spent}, {100 - spent}),
            (gen_random_uuid(), '{CUSTOMER}', 'AAPL', 2, 2);
        INSERT INTO reservations (id, order_id, customer_id, asset_name, amount, status)
            VALUES (gen_random_uuid(), '{order_id}', '{CUSTOMER}', 'TRY', 20, '{res_status}');
        INSERT INTO deposits (id, customer_id, asset_name, amount, status, requested_by, requested_at,
            decided_by, decided_at) VALUES (gen_random_uuid(), '{CUSTOMER}', 'TRY', 100, 'APPROVED',
            '{CUSTOMER}', now(), '{ADMIN}', now());
        INSERT INTO ledger (customer_id, asset_name, kind, delta_total, delta_usable, order_id) VALUES
            ('{CUSTOMER}', 'TRY', 'DEPOSIT', 100, 100, NULL),
            ('{CUSTOMER}', 'TRY', 'RESERVE', 0, -20, '{order_id}'),
            ('{CUSTOMER}', 'TRY', 'SETTLE_DEBIT', -{spent}, 0, '{order_id}'){release},
            ('{CUSTOMER}', 'AAPL', 'SETTLE_CREDIT', 2, 2, '{order_id}');
        """,
    )
    return order_id


async def test_audit_consistent_databases_are_clean(dbs: tuple[str, str]) -> None:
    settled_buy(*dbs)
    report = await run_audit(*dbs, settle_seconds=0)
    assert report.violations == []
    assert (report.orders, report.balances, report.ledger_entries) == (1, 2, 4)


async def test_audit_buy_executed_below_its_limit_with_the_rest_released_is_clean(
    dbs: tuple[str, str],
) -> None:
    settled_buy(*dbs, executed=Decimal("9.45"))
    report = await run_audit(*dbs, settle_seconds=0)
    assert report.violations == []
    assert report.try_total == Decimal("81.10")


async def test_audit_buy_executed_above_its_limit_is_a_violation(dbs: tuple[str, str]) -> None:
    order_id = settled_buy(*dbs)
    execute(dbs[0], f"UPDATE orders SET executed_price = 10.05 WHERE id = '{order_id}'")
    report = await run_audit(*dbs, settle_seconds=0)
    assert f"order {order_id}: BUY executed at 10.05, beyond its limit 10" in report.violations


async def test_audit_settlement_at_another_price_than_executed_breaks_conservation(
    dbs: tuple[str, str],
) -> None:
    order_id = settled_buy(*dbs, executed=Decimal(9))
    execute(dbs[0], f"UPDATE orders SET executed_price = 9.5 WHERE id = '{order_id}'")
    report = await run_audit(*dbs, settle_seconds=0)
    assert report.violations == [
        f"customer {CUSTOMER} TRY: total 82 but approved deposits − paid withdrawals ± settled orders = 81.0"
    ]


async def test_audit_balance_that_differs_from_its_ledger_is_a_violation(dbs: tuple[str, str]) -> None:
    settled_buy(*dbs)
    execute(
        dbs[1],
        "UPDATE assets SET total_size = total_size + 1, usable_size = usable_size + 1 "
        "WHERE asset_name = 'TRY'",
    )
    report = await run_audit(*dbs, settle_seconds=0)
    assert any("ledger sums" in v for v in report.violations)
    assert any("approved deposits − paid withdrawals" in v for v in report.violations)


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


# --- holds and money requests ------------------------------------------------------------------------------

# What the account service wrote for a deposit of totalSize 10, usableSize 5 before deposits had to be usable
# in full: the unusable half held by a reservation of no order.
PHANTOM_HOLD = f"""
    INSERT INTO assets (id, customer_id, asset_name, total_size, usable_size)
        VALUES (gen_random_uuid(), '{CUSTOMER}', 'TRY', 10, 5);
    INSERT INTO reservations (id, order_id, customer_id, asset_name, amount, status)
        VALUES ('{uuid.UUID(int=99)}', NULL, '{CUSTOMER}', 'TRY', 5, 'HELD');
    INSERT INTO ledger (customer_id, asset_name, kind, delta_total, delta_usable, order_id, reference) VALUES
        ('{CUSTOMER}', 'TRY', 'DEPOSIT', 10, 10, NULL, 'deposit by mallory'),
        ('{CUSTOMER}', 'TRY', 'RESERVE', 0, -5, NULL, '{uuid.UUID(int=99)}');
"""


async def test_audit_phantom_hold_left_by_the_old_deposit_is_a_violation(
    make_database: Callable[[str], str],
) -> None:
    order_url, account_url = make_database("order"), make_database("account")
    migrate("order", order_url)
    migrate("account", account_url, "0002")
    execute(account_url, PHANTOM_HOLD)
    migrate("account", account_url)  # the upgrade keeps what it finds; the audit reports it

    report = await run_audit(order_url, account_url, settle_seconds=0)

    assert report.violations == [
        f"customer {CUSTOMER} TRY: 5 held by reservation {uuid.UUID(int=99)}, which belongs to no PENDING "
        "order or REQUESTED withdrawal"
    ]  # the deposit itself became an APPROVED deposit: conservation holds


def test_audit_phantom_hold_cannot_be_written_any_more(dbs: tuple[str, str]) -> None:
    with pytest.raises(psycopg2.errors.CheckViolation, match="reservations_belong"):
        execute(dbs[1], PHANTOM_HOLD)


def requested_withdrawal(account_url: str, hold_status: str = "HELD") -> uuid.UUID:
    """A customer with 100 TRY deposited who asked to withdraw 60 (held): written as the service would."""
    withdrawal_id = uuid.uuid4()
    execute(
        account_url,
        f"""
        INSERT INTO assets (id, customer_id, asset_name, total_size, usable_size)
            VALUES (gen_random_uuid(), '{CUSTOMER}', 'TRY', 100, 40);
        INSERT INTO deposits (id, customer_id, asset_name, amount, status, requested_by, requested_at,
            decided_by, decided_at) VALUES (gen_random_uuid(), '{CUSTOMER}', 'TRY', 100, 'APPROVED',
            '{ADMIN}', now(), '{ADMIN}', now());
        INSERT INTO withdrawals (id, customer_id, amount, iban, status, requested_by)
            VALUES ('{withdrawal_id}', '{CUSTOMER}', 60, 'TR33...', 'REQUESTED', '{CUSTOMER}');
        INSERT INTO reservations (id, withdrawal_id, customer_id, asset_name, amount, status)
            VALUES (gen_random_uuid(), '{withdrawal_id}', '{CUSTOMER}', 'TRY', 60, '{hold_status}');
        INSERT INTO ledger (customer_id, asset_name, kind, delta_total, delta_usable, reference) VALUES
            ('{CUSTOMER}', 'TRY', 'DEPOSIT', 100, 100, NULL),
            ('{CUSTOMER}', 'TRY', 'RESERVE', 0, -60, '{withdrawal_id}');
        """,
    )
    return withdrawal_id


async def test_audit_requested_withdrawal_holding_its_amount_is_clean(dbs: tuple[str, str]) -> None:
    requested_withdrawal(dbs[1])
    report = await run_audit(*dbs, settle_seconds=0)
    assert report.violations == []


async def test_audit_requested_withdrawal_whose_hold_was_settled_is_a_violation(dbs: tuple[str, str]) -> None:
    withdrawal_id = requested_withdrawal(dbs[1], hold_status="SETTLED")
    report = await run_audit(*dbs, settle_seconds=0)
    assert f"withdrawal {withdrawal_id} of 60 is REQUESTED but holds SETTLED 60" in report.violations


async def test_audit_deposit_in_the_ledger_without_an_approved_deposit_breaks_conservation(
    dbs: tuple[str, str],
) -> None:
    execute(
        dbs[1],
        f"""
        INSERT INTO assets (id, customer_id, asset_name, total_size, usable_size)
            VALUES (gen_random_uuid(), '{CUSTOMER}', 'TRY', 1000, 1000);
        INSERT INTO ledger (customer_id, asset_name, kind, delta_total, delta_usable)
            VALUES ('{CUSTOMER}', 'TRY', 'DEPOSIT', 1000, 1000);
        """,
    )
    report = await run_audit(*dbs, settle_seconds=0)
    assert report.violations == [
        f"customer {CUSTOMER} TRY: total 1000 but approved deposits − paid withdrawals ± settled orders = 0"
    ]
