"""`oms audit`: every invariant of the order and account databases, checked against each other.

Per customer and asset: 0 ≤ usable ≤ total; total − usable = Σ HELD reservations; the balance equals the sum
of its ledger; and it equals approved deposits − paid withdrawals ± what settled orders (from the *order*
database) moved at their executed prices. Per order: MATCHED ⇔ reservation SETTLED, and executed at its
limit or better; CANCELED ⇔ none or RELEASED; PENDING ⇔ HELD or none; what it reserved is what its terms
reserve (a BUY size × its limit or its MARKET collar price, a SELL its size). The market's own reasons are
checked against the order: "not marketable" only for an IOC or MARKET order, decided once reserved; "price
moved beyond the collar" only for a MARKET BUY; "expired" only for a DAY order, at a close after its
creation — and no DAY order outlives a close (executed, canceled otherwise, or still PENDING well after
it; but in `immediate` mode, which has no close); an IOC or MARKET order never rests PENDING once
reserved (but in `manual` mode, where it waits). Every hold belongs to an order or a REQUESTED
withdrawal — nothing else makes money unusable — and per withdrawal: REQUESTED ⇔ its amount HELD; PAID ⇔
its hold SETTLED (or none: paid at once); REJECTED ⇔ RELEASED.
An order whose events are still on their way (e.g. MATCHED, reservation still HELD) is re-checked until
`settle_seconds` pass; only one still stuck then is a violation.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg

from oms.account import request_store
from oms.account import store as account_store
from oms.account.domain import Asset, OrderTerms, Reservation
from oms.account.requests import Deposit, DepositStatus, Withdrawal, WithdrawalStatus
from oms.kernel.money import CASH, OrderType, Side, TimeInForce, add, cost, sub
from oms.kernel.settings import ExecutionMode, MarketClose, Settings
from oms.order import store as order_store
from oms.order.domain import BEYOND_COLLAR, EXPIRED, NOT_MARKETABLE, Order, OrderStatus

Key = tuple[uuid.UUID, str]  # (customer, asset)
ZERO = Decimal(0)
# How long after a close its DAY orders may still be on their way to "expired": the order service may be
# restarting at the close (it expires them at its start) and expires them in batches.
EXPIRY_GRACE = timedelta(seconds=30)

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

    def as_dict(self) -> dict[str, object]:
        """The report as `oms audit --json` prints it."""
        return {
            "clean": self.clean,
            "customers": self.customers,
            "balances": self.balances,
            "ledgerEntries": self.ledger_entries,
            "orders": self.orders,
            "pendingUnreserved": self.pending_unreserved,
            "tryTotal": self.try_total,
            "violations": self.violations,
        }


# A withdrawal's status and its hold's (None: no hold), as they may be together.
WITHDRAWAL_HOLDS = {
    (WithdrawalStatus.REQUESTED, "HELD"),
    (WithdrawalStatus.PAID, "SETTLED"),
    (WithdrawalStatus.PAID, None),  # up to the threshold: paid at once, never held
    (WithdrawalStatus.REJECTED, "RELEASED"),
}


@dataclass
class _Snapshot:
    balances: dict[Key, Asset]
    ledger: dict[Key, account_store.LedgerSum]
    held: dict[Key, Decimal]
    reservations: dict[uuid.UUID, Reservation]  # by order
    holds: dict[uuid.UUID, Reservation]  # by withdrawal
    ownerless: list[Reservation]  # HELD, of no order and no withdrawal
    deposits: list[Deposit]
    withdrawals: list[Withdrawal]


async def _account_snapshot(conn: asyncpg.Connection) -> _Snapshot:
    balances = {(a.customer_id, a.asset_name): a for a in await account_store.balances(conn, None, None)}
    return _Snapshot(
        balances,
        await account_store.ledger_sums(conn),
        await account_store.held_sums(conn),
        await account_store.order_reservations(conn),
        await account_store.withdrawal_holds(conn),
        await account_store.ownerless_holds(conn),
        await request_store.all_deposits(conn),
        await request_store.all_withdrawals(conn),
    )


def _check_balances(snap: _Snapshot, report: AuditReport) -> None:
    for key in sorted(set(snap.balances) | set(snap.ledger) | set(snap.held), key=str):
        asset = snap.balances.get(key)
        total, usable = (asset.total_size, asset.usable_size) if asset else (ZERO, ZERO)
        who = f"customer {key[0]} {key[1]}"
        if not ZERO <= usable <= total:
            report.violations.append(f"{who}: usable {usable} outside 0..total {total}")
        held = snap.held.get(key, ZERO)
        if sub(total, usable) != held:
            report.violations.append(
                f"{who}: total − usable = {sub(total, usable)} but HELD reservations = {held}"
            )
        summed = snap.ledger.get(key)
        ledger = (summed.total, summed.usable) if summed else (ZERO, ZERO)
        if ledger != (total, usable):
            report.violations.append(f"{who}: balance ({total}, {usable}) ≠ ledger sums {ledger}")


@dataclass(frozen=True)
class MarketRules:
    """How the audited system executes: its mode and its daily close (read from the settings by default)."""

    execution: ExecutionMode
    close: MarketClose

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> MarketRules:
        settings = settings or Settings()
        return cls(settings.execution, settings.close())

    @classmethod
    def of_running(cls, settings: Settings) -> MarketRules:
        """The rules the system running in `settings.data_dir` was started with (its `run/state.json`), else
        those of `settings`."""
        state_file = settings.data_dir / "run" / "state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        if "execution" not in state:
            return cls.from_settings(settings)
        return cls(ExecutionMode(state["execution"]), MarketClose.parse(state["market_close"]))


def _check_orders(
    orders: list[Order], snap: _Snapshot, report: AuditReport, rules: MarketRules, now: datetime
) -> tuple[dict[Key, Decimal], list[uuid.UUID]]:
    """Order/reservation agreement; returns what settled orders moved and the orders still in flight."""
    moved: dict[Key, Decimal] = defaultdict(Decimal)
    in_flight = []
    for order in orders:
        reservation = snap.reservations.get(order.id)
        pair = (order.status.value, reservation.status.value if reservation else None)
        if pair in BROKEN:
            report.violations.append(f"order {order.id}: {BROKEN[pair]}")
        elif pair in IN_FLIGHT:
            in_flight.append(order.id)
        elif pair == ("PENDING", None):
            report.pending_unreserved += 1
        if reservation is not None and (problem := reservation_problem(order, reservation)):
            report.violations.append(f"order {order.id}: {problem}")
        report.violations += [f"order {order.id}: {p}" for p in market_problems(order, rules, now)]
        if order.status.value == "MATCHED" and (problem := execution_problem(order)):
            report.violations.append(f"order {order.id}: {problem}")
        elif pair == ("MATCHED", "SETTLED"):
            for asset, amount in terms_of(order).moves():
                moved[(order.customer_id, asset)] = add(moved[(order.customer_id, asset)], amount)
    known = {o.id for o in orders}
    report.violations += [f"reservation for unknown order {o}" for o in snap.reservations if o not in known]
    return moved, in_flight


def terms_of(order: Order) -> OrderTerms:
    """The account's view of an executed order: what it moved, at its executed price."""
    return OrderTerms(
        order.id, order.customer_id, order.asset_name, order.side, order.size, order.executed_price
    )


def execution_problem(order: Order) -> str | None:
    """Why a MATCHED order's execution breaks its terms: no executed price, or one worse than its limit (a
    BUY above it, a SELL below it), or a MARKET BUY above what it reserved."""
    price = order.executed_price
    if price is None:
        return "MATCHED without an executed price"
    limit = order.price if order.side is Side.SELL else order.buy_price
    if limit is not None and (price > limit if order.side is Side.BUY else price < limit):
        return f"{order.side} executed at {price}, beyond its limit {limit}"
    return None


def reservation_problem(order: Order, reservation: Reservation) -> str | None:
    """Why what the account reserved for `order` is not what its terms reserve: a BUY size × its limit (a
    MARKET BUY: × the ask plus the collar) TRY, a SELL its size of the asset (None: it is)."""
    if order.side is Side.BUY:
        price = order.buy_price
        expected = (CASH, cost(order.size, price)) if price is not None else None
    else:
        expected = (order.asset_name, order.size)
    if expected != (reservation.asset_name, reservation.amount):
        wanted = f"{expected[1]} {expected[0]}" if expected else "nothing"
        return f"reserved {reservation.amount} {reservation.asset_name}, but its terms reserve {wanted}"
    return None


def market_problems(order: Order, rules: MarketRules, now: datetime) -> list[str]:
    """Where `order`'s record contradicts the market's rules (SPEC §3b) — its reason, its time in force, the
    close — as of `now`."""
    problems = []
    reason = order.reason if order.status is OrderStatus.CANCELED else None
    at_once = order.time_in_force is TimeInForce.IOC or order.order_type is OrderType.MARKET
    if reason == NOT_MARKETABLE and not (at_once and order.reserved):
        problems.append(f"canceled {NOT_MARKETABLE!r}, but it is a reserved IOC or MARKET order only")
    market_buy = order.order_type is OrderType.MARKET and order.side is Side.BUY
    if reason == BEYOND_COLLAR and not (market_buy and order.reserve_price is not None and order.reserved):
        problems.append(f"canceled {BEYOND_COLLAR!r}, which only a reserved MARKET BUY can be")
    close = rules.close.last(order.updated_at)
    if reason == EXPIRED and not (order.time_in_force is TimeInForce.DAY and order.created_at < close):
        problems.append(f"canceled {EXPIRED!r}, but it is not a DAY order placed before a close")
    if rules.execution is not ExecutionMode.IMMEDIATE:  # there an order executes at once: no close
        problems += _outlived_close(order, rules.close, now)
    rests_at_once = order.status is OrderStatus.PENDING and order.reserved and at_once
    if rests_at_once and rules.execution is not ExecutionMode.MANUAL:
        problems.append(f"a {order.order_type} {order.time_in_force} order rests PENDING once reserved")
    return problems


def _outlived_close(order: Order, close: MarketClose, now: datetime) -> list[str]:
    """A DAY order placed before a close is canceled "expired" at it: never executed, canceled otherwise or
    left PENDING well after it (`EXPIRY_GRACE`)."""
    if order.time_in_force is not TimeInForce.DAY or order.reason == EXPIRED:
        return []
    until = now if order.status is OrderStatus.PENDING else order.updated_at
    first = close.next(order.created_at)
    if first + EXPIRY_GRACE < until:
        return [f"a DAY order placed before the close at {first.isoformat()} is {order.status} after it"]
    return []


def _check_holds(snap: _Snapshot, report: AuditReport) -> None:
    """Only PENDING orders (checked with the orders) and REQUESTED withdrawals may hold money."""
    for phantom in snap.ownerless:
        report.violations.append(
            f"customer {phantom.customer_id} {phantom.asset_name}: {phantom.amount} held by reservation "
            f"{phantom.id}, which belongs to no PENDING order or REQUESTED withdrawal"
        )
    for withdrawal in snap.withdrawals:
        hold = snap.holds.get(withdrawal.id)
        pair = (withdrawal.status, hold.status.value if hold else None)
        if pair not in WITHDRAWAL_HOLDS or (hold is not None and hold.amount != withdrawal.amount):
            held = f"{hold.status.value} {hold.amount}" if hold else "nothing"
            report.violations.append(
                f"withdrawal {withdrawal.id} of {withdrawal.amount} is {withdrawal.status} but holds {held}"
            )


def _cash_flows(snap: _Snapshot) -> dict[Key, Decimal]:
    """What came in and went out of each balance: approved deposits − paid withdrawals."""
    flows: dict[Key, Decimal] = defaultdict(Decimal)
    for deposit in snap.deposits:
        if deposit.status is DepositStatus.APPROVED:
            key = (deposit.customer_id, deposit.asset_name)
            flows[key] = add(flows[key], deposit.amount)
    for withdrawal in snap.withdrawals:
        if withdrawal.status is WithdrawalStatus.PAID:
            key = (withdrawal.customer_id, CASH)
            flows[key] = sub(flows[key], withdrawal.amount)
    return flows


def _check_conservation(snap: _Snapshot, moved: dict[Key, Decimal], report: AuditReport) -> None:
    flows = _cash_flows(snap)
    for key in sorted(set(snap.balances) | set(moved) | set(flows), key=str):
        asset = snap.balances.get(key)
        total = asset.total_size if asset else ZERO
        expected = add(flows.get(key, ZERO), moved.get(key, ZERO))
        if total != expected:
            report.violations.append(
                f"customer {key[0]} {key[1]}: total {total} but approved deposits − paid withdrawals "
                f"± settled orders = {expected}"
            )


async def _once(order_url: str, account_url: str, rules: MarketRules) -> tuple[AuditReport, list[uuid.UUID]]:
    report = AuditReport()
    account = await asyncpg.connect(account_url)
    order = await asyncpg.connect(order_url)
    try:
        # Account first: an order can only be ahead of the account, never behind it.
        async with account.transaction(isolation="repeatable_read", readonly=True):
            snap = await _account_snapshot(account)
        orders = await order_store.all_orders(order)
        now: datetime = await order.fetchval("SELECT now()")
    finally:
        await account.close()
        await order.close()
    _check_balances(snap, report)
    _check_holds(snap, report)
    moved, in_flight = _check_orders(orders, snap, report, rules, now)
    _check_conservation(snap, moved, report)
    report.customers = len({k[0] for k in snap.balances})
    report.balances, report.orders = len(snap.balances), len(orders)
    report.ledger_entries = sum(s.entries for s in snap.ledger.values())
    report.try_total = sum((a.total_size for (_, name), a in snap.balances.items() if name == CASH), ZERO)
    return report, in_flight


async def run_audit(
    order_url: str, account_url: str, settle_seconds: float = 10.0, rules: MarketRules | None = None
) -> AuditReport:
    """Audit both databases; checks are repeated while orders are still in flight, up to `settle_seconds`.
    `rules`: the system's execution mode and close (by default, as the settings say)."""
    rules = rules or MarketRules.from_settings()
    deadline = time.monotonic() + settle_seconds
    while True:
        report, in_flight = await _once(order_url, account_url, rules)
        if not in_flight and report.clean:
            return report
        if time.monotonic() >= deadline:
            report.violations += [
                f"order {o}: still in flight after {settle_seconds:.0f}s" for o in in_flight
            ]
            return report
        await asyncio.sleep(0.5)
