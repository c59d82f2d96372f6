"""`oms audit`: every invariant of the order and account databases, checked against each other.

Per customer and asset: 0 ≤ usable ≤ total; total − usable = Σ HELD reservations; the balance equals the sum
of its ledger; and it equals deposits − withdrawals ± what settled orders (from the *order* database) moved.
Per order: MATCHED ⇔ reservation SETTLED; CANCELED ⇔ none or RELEASED; PENDING ⇔ HELD or none.
An order whose events are still on their way (e.g. MATCHED, reservation still HELD) is re-checked until
`settle_seconds` pass; only one still stuck then is a violation.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg

from oms.kernel.money import CASH, EXACT

Key = tuple[uuid.UUID, str]  # (customer, asset)
ZERO = Decimal(0)

# (order status, reservation status or None) that can only be a bug, and the ones still in flight.
BROKEN = {
    ("MATCHED", None): "MATCHED but nothing was reserved",
    ("MATCHED", "RELEASED"): "MATCHED but its reservation was released",
    ("CANCELED", "SETTLED"): "CANCELED but its reservation was settled",
    ("PENDING", "SETTLED"): "PENDING but its reservation was settled",
    ("PENDING", "RELEASED"): "PENDING but its reservation was released",
}
IN_FLIGHT = {
    ("MATCHED", "HELD"): "MATCHED but its reservation is still HELD",
    ("CANCELED", "HELD"): "CANCELED but its reservation is still HELD",
}


@dataclass
class AuditReport:
    customers: int = 0
    balances: int = 0
    orders: int = 0
    ledger_entries: int = 0
    try_total: Decimal = ZERO
    violations: list[str] = field(default_factory=list)
    pending_unreserved: int = 0  # PENDING orders the account has not answered yet (fine in manual mode)

    @property
    def clean(self) -> bool:
        return not self.violations


@dataclass
class _Snapshot:
    balances: dict[Key, tuple[Decimal, Decimal]]
    ledger: dict[Key, tuple[Decimal, Decimal]]
    cash_flows: dict[Key, Decimal]  # deposits − withdrawals
    held: dict[Key, Decimal]
    reservations: dict[uuid.UUID, tuple[str, Decimal]]  # order → (status, amount)
    ledger_entries: int


async def _account_snapshot(conn: asyncpg.Connection) -> _Snapshot:
    balances = {
        (r["customer_id"], r["asset_name"]): (r["total_size"], r["usable_size"])
        for r in await conn.fetch("SELECT customer_id, asset_name, total_size, usable_size FROM assets")
    }
    ledger, flows, entries = {}, {}, 0
    for r in await conn.fetch(
        "SELECT customer_id, asset_name, sum(delta_total) AS t, sum(delta_usable) AS u, count(*) AS n, "
        "coalesce(sum(delta_total) FILTER (WHERE kind IN ('DEPOSIT', 'WITHDRAWAL')), 0) AS flow "
        "FROM ledger GROUP BY customer_id, asset_name"
    ):
        key = (r["customer_id"], r["asset_name"])
        ledger[key], flows[key] = (r["t"], r["u"]), r["flow"]
        entries += r["n"]
    held = {
        (r["customer_id"], r["asset_name"]): r["amount"]
        for r in await conn.fetch(
            "SELECT customer_id, asset_name, sum(amount) AS amount FROM reservations "
            "WHERE status = 'HELD' GROUP BY customer_id, asset_name"
        )
    }
    reservations = {
        r["order_id"]: (r["status"], r["amount"])
        for r in await conn.fetch(
            "SELECT order_id, status, amount FROM reservations WHERE order_id IS NOT NULL"
        )
    }
    return _Snapshot(balances, ledger, flows, held, reservations, entries)


def _check_balances(snap: _Snapshot, report: AuditReport) -> None:
    for key in sorted(set(snap.balances) | set(snap.ledger) | set(snap.held), key=str):
        total, usable = snap.balances.get(key, (ZERO, ZERO))
        who = f"customer {key[0]} {key[1]}"
        if not ZERO <= usable <= total:
            report.violations.append(f"{who}: usable {usable} outside 0..total {total}")
        if EXACT.subtract(total, usable) != snap.held.get(key, ZERO):
            report.violations.append(
                f"{who}: total − usable = {total - usable} but HELD reservations = {snap.held.get(key, ZERO)}"
            )
        if snap.ledger.get(key, (ZERO, ZERO)) != (total, usable):
            report.violations.append(
                f"{who}: balance ({total}, {usable}) ≠ ledger sums {snap.ledger.get(key)}"
            )


def _settled_moves(order: asyncpg.Record) -> list[tuple[Key, Decimal]]:
    """What a settled order moved, by (customer, asset): a BUY pays its cost in TRY and gets its size;
    a SELL the reverse."""
    cost = EXACT.multiply(order["size"], order["price"])
    sign = 1 if order["side"] == "BUY" else -1
    customer = order["customer_id"]
    return [
        ((customer, CASH), EXACT.multiply(Decimal(-sign), cost)),
        ((customer, order["asset_name"]), EXACT.multiply(Decimal(sign), order["size"])),
    ]


def _check_orders(
    orders: list[asyncpg.Record], snap: _Snapshot, report: AuditReport
) -> tuple[dict[Key, Decimal], list[uuid.UUID]]:
    """Order/reservation agreement; returns what settled orders moved and the orders still in flight."""
    moved: dict[Key, Decimal] = defaultdict(Decimal)
    in_flight = []
    for order in orders:
        reservation = snap.reservations.get(order["id"])
        pair = (order["status"], reservation[0] if reservation else None)
        if pair in BROKEN:
            report.violations.append(f"order {order['id']}: {BROKEN[pair]}")
        elif pair in IN_FLIGHT:
            in_flight.append(order["id"])
        elif pair == ("PENDING", None):
            report.pending_unreserved += 1
        if pair == ("MATCHED", "SETTLED"):
            for key, amount in _settled_moves(order):
                moved[key] = EXACT.add(moved[key], amount)
    known = {o["id"] for o in orders}
    report.violations += [f"reservation for unknown order {o}" for o in snap.reservations if o not in known]
    return moved, in_flight


def _check_conservation(snap: _Snapshot, moved: dict[Key, Decimal], report: AuditReport) -> None:
    for key in sorted(set(snap.balances) | set(moved), key=str):
        total = snap.balances.get(key, (ZERO, ZERO))[0]
        expected = EXACT.add(snap.cash_flows.get(key, ZERO), moved.get(key, ZERO))
        if total != expected:
            report.violations.append(
                f"customer {key[0]} {key[1]}: total {total} but deposits − withdrawals "
                f"± settled orders = {expected}"
            )


async def _once(order_url: str, account_url: str) -> tuple[AuditReport, list[uuid.UUID]]:
    report = AuditReport()
    account = await asyncpg.connect(account_url)
    order = await asyncpg.connect(order_url)
    try:
        # Account first: an order can only be ahead of the account, never behind it.
        async with account.transaction(isolation="repeatable_read", readonly=True):
            snap = await _account_snapshot(account)
        orders = await order.fetch(
            "SELECT id, customer_id, asset_name, side, size, price, status FROM orders"
        )
    finally:
        await account.close()
        await order.close()
    _check_balances(snap, report)
    moved, in_flight = _check_orders(orders, snap, report)
    _check_conservation(snap, moved, report)
    report.customers = len({k[0] for k in snap.balances})
    report.balances, report.orders, report.ledger_entries = (
        len(snap.balances),
        len(orders),
        snap.ledger_entries,
    )
    report.try_total = sum((t for (_, a), (t, _) in snap.balances.items() if a == CASH), ZERO)
    return report, in_flight


async def run_audit(order_url: str, account_url: str, settle_seconds: float = 10.0) -> AuditReport:
    """Audit both databases; checks are repeated while orders are still in flight, up to `settle_seconds`."""
    deadline = time.monotonic() + settle_seconds
    while True:
        report, in_flight = await _once(order_url, account_url)
        if not in_flight and report.clean:
            return report
        if time.monotonic() >= deadline:
            report.violations += [
                f"order {o}: still in flight after {settle_seconds:.0f}s" for o in in_flight
            ]
            return report
        await asyncio.sleep(0.5)
