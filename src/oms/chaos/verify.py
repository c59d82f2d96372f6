"""After the faults: every invariant, and every request the workload saw accepted, checked against the
databases and the broker. Each broken expectation is one line in `violations`, which must stay empty."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg

from oms.account import request_store
from oms.account import store as account_store
from oms.account.domain import Asset, EntryKind, LedgerEntry
from oms.account.requests import Deposit, Withdrawal
from oms.bench.system import Target
from oms.chaos.faults import FaultLog
from oms.chaos.market import QuoteHistory
from oms.chaos.workload import Ledger, Op
from oms.kernel import inbox
from oms.kernel.broker import JetStreamBroker
from oms.kernel.money import CASH, OrderType, Side, add, cost, sub
from oms.kernel.outbox import unrelayed
from oms.kernel.settings import ExecutionMode, MarketClose
from oms.kernel.topology import consumer_of, type_of
from oms.order import store as order_store
from oms.order.domain import BEYOND_COLLAR, Order, OrderStatus
from oms.runtime.audit import MarketRules, run_audit, terms_of

ZERO = Decimal(0)
Key = tuple[str, str]  # (customer, asset)


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        self.violations.append(message)


@dataclass(frozen=True)
class Rules:
    """How the system under test executes orders: its mode, its daily close, and the quotes its market
    published (None: not recorded)."""

    execution: ExecutionMode
    close: MarketClose
    quotes: QuoteHistory | None = None

    @property
    def audit(self) -> MarketRules:
        return MarketRules(self.execution, self.close)


def _same_terms(op: Op, row: Order) -> bool:
    terms = op.body
    return (
        str(row.customer_id) == op.customer
        and row.asset_name == terms["asset"]
        and row.side.value == terms["side"]
        and row.size == terms["size"]
        and row.price == terms.get("price")  # None: a MARKET order
        and row.order_type.value == terms.get("type", "LIMIT")
        and row.time_in_force.value == terms.get("tif", "GTC")
    )


def check_orders(book: Ledger, rows: dict[str, Order], verdict: Verdict) -> dict[str, Order]:
    """Every accepted create is exactly one order with its terms; nothing else exists (an order of a create
    whose answer never came is allowed once). Returns the orders that count, by id."""
    ours: dict[str, Order] = {}
    answered: Counter[str] = Counter()
    for op in book.orders:
        if not op.accepted:
            continue
        order_id = str(op.answer["id"])
        answered[order_id] += 1
        row = rows.get(order_id)
        if row is None:
            verdict.fail(f"lost order: create {op.key} was answered {order_id}, which does not exist")
        elif not _same_terms(op, row):
            verdict.fail(f"order {order_id} does not have the terms of create {op.key}")
        else:
            ours[order_id] = row
    verdict.violations += [f"two creates answered with one order {i}" for i, n in answered.items() if n > 1]
    unresolved = [op for op in book.orders if op.outcome == "unresolved"]
    for order_id, row in rows.items():
        if order_id in ours:
            continue
        match = next((op for op in unresolved if _same_terms(op, row)), None)
        if match is None:
            verdict.fail(f"order {order_id} exists but no accepted create asked for it (a double?)")
        else:
            unresolved.remove(match)
            ours[order_id] = row
    for order_id, row in ours.items():
        if row.status is OrderStatus.PENDING:
            verdict.fail(f"order {order_id} is still PENDING after the system went quiet")
    for op in [*book.cancels, *book.sweeps]:
        row = rows.get(op.body["order_id"])
        if op.accepted and (row is None or row.status is not OrderStatus.CANCELED):
            verdict.fail(f"cancel of {op.body['order_id']} was accepted but the order is not CANCELED")
    return ours


# --- requests: what the workload was answered, and what became of them ----------------------------------


def final_status(book: Ledger, op: Op) -> str | None:
    """The status an accepted deposit or withdrawal ended in as the workload was answered: at once, or by the
    accepted decision on it (REQUESTED while there is none). None if it was not accepted."""
    if not op.accepted:
        return None
    status = str(op.answer.get("status", "APPROVED"))  # an admin's deposit is answered with the asset's id
    decision = book.decided().get(str(op.answer["id"]))
    if status == "REQUESTED" and decision is not None and decision.accepted:
        return str(decision.answer["status"])
    return status


def credited(book: Ledger) -> list[Op]:
    """The deposits that were credited: an admin's at once, and the requests that were approved."""
    requests = [op for op in book.deposit_requests if final_status(book, op) == "APPROVED"]
    return [*(op for op in book.deposits if op.accepted), *requests]


def paid(book: Ledger) -> list[Op]:
    """The withdrawals that were paid: at once, or approved."""
    return [op for op in book.withdrawals if final_status(book, op) == "PAID"]


def resolve_undecided(book: Ledger, requests: list[Deposit | Withdrawal]) -> int:
    """A decision that never got an answer may or may not have been taken: the request's stored status says.
    Returns how many were found taken."""
    stored = {str(r.id): r.status.value for r in requests}
    found = 0
    for op in book.decisions:
        status = stored.get(op.body["id"])
        if op.outcome == "unresolved" and status not in (None, "REQUESTED"):
            op.outcome, op.answer, found = "accepted", {"status": status}, found + 1
    return found


def check_requests(book: Ledger, requests: list[Deposit | Withdrawal], verdict: Verdict) -> None:
    """Every accepted request is stored once, in the status it was answered with (decided: never left
    REQUESTED); nothing else was requested; every own approval of a withdrawal was refused (four eyes)."""
    stored = {str(r.id): r for r in requests}
    asked = [op for op in [*book.deposit_requests, *book.withdrawals] if op.accepted]
    for op in asked:
        status, row = final_status(book, op), stored.pop(str(op.answer["id"]), None)
        what = f"{op.kind} {op.answer['id']} of {op.body['amount']}"
        if row is None or row.amount != op.body["amount"] or str(row.customer_id) != op.customer:
            verdict.fail(f"lost {what}: answered {op.answer}, stored {row}")
        elif row.status.value != status:
            verdict.fail(f"{what} is {row.status.value}, but the workload was answered {status}")
        elif status == "REQUESTED":
            verdict.fail(f"{what} is still REQUESTED: its decision was {book.decided().get(str(row.id))}")
    unanswered = Counter((op.customer, op.body["amount"]) for op in book.deposit_requests if not op.accepted)
    unanswered += Counter((op.customer, op.body["amount"]) for op in book.withdrawals if not op.accepted)
    for row in stored.values():
        asked_by_customer = isinstance(row, Withdrawal) or row.requested.by == row.customer_id
        key = (str(row.customer_id), row.amount)
        if asked_by_customer and unanswered[key] > 0:
            unanswered[key] -= 1
        elif asked_by_customer:
            verdict.fail(f"{type(row).__name__.lower()} {row.id} of {row.amount} that no request explains")
    verdict.violations += [
        f"the admin who asked for withdrawal {op.body['id']} approved it: {op.status} {op.answer}"
        for op in book.four_eyes
        if op.outcome != "unresolved" and op.status != 403
    ]
    verdict.violations += [
        f"decision {op.body} refused: {op.status} {op.answer}"
        for op in book.decisions
        if op.outcome == "refused"
    ]


def _expected_balances(book: Ledger, orders: dict[str, Order]) -> dict[Key, Decimal]:
    """Per customer and asset: credited deposits − paid withdrawals ± what MATCHED orders moved."""
    expected: dict[Key, Decimal] = defaultdict(Decimal)
    for op in credited(book):
        key = (op.customer, op.body["asset"])
        expected[key] = add(expected[key], op.body["amount"])
    for op in paid(book):
        expected[(op.customer, CASH)] = sub(expected[(op.customer, CASH)], op.body["amount"])
    for order in orders.values():
        if order.status is OrderStatus.MATCHED:
            for asset, amount in terms_of(order).moves():
                key = (str(order.customer_id), asset)
                expected[key] = add(expected[key], amount)
    return expected


def check_money(book: Ledger, orders: dict[str, Order], balances: list[Asset], verdict: Verdict) -> None:
    """Every balance is exactly what the accepted requests and the MATCHED orders make it, to the kuruş."""
    actual = {(str(a.customer_id), a.asset_name): (a.total_size, a.usable_size) for a in balances}
    expected = _expected_balances(book, orders)
    for key in sorted(set(actual) | set(expected)):
        total, usable = actual.get(key, (ZERO, ZERO))
        if total != expected.get(key, ZERO):
            verdict.fail(f"customer {key[0]} {key[1]}: total {total}, expected {expected.get(key, ZERO)}")
        if usable != total:
            verdict.fail(
                f"customer {key[0]} {key[1]}: usable {usable} ≠ total {total} with nothing in flight"
            )
    held = sum((t for (_, asset), (t, _) in actual.items() if asset == CASH), ZERO)
    deposited = sum((op.body["amount"] for op in credited(book) if op.body["asset"] == CASH), ZERO)
    withdrawn = sum((op.body["amount"] for op in paid(book)), ZERO)
    verdict.figures["money"] = {
        "try_held_by_customers": str(held),
        "try_deposited": str(deposited),
        "try_withdrawn": str(withdrawn),
        "try_net_of_trades": str(add(sub(held, deposited), withdrawn)),
    }


def resolve_unanswered(book: Ledger, ledger: list[LedgerEntry]) -> int:
    """A deposit or withdrawal that never got an answer (given up on) may or may not have happened: one
    that the ledger shows, beyond what the accepted requests explain, counts as accepted; the rest did not
    happen. Returns how many were found applied."""
    accepted = Counter((op.customer, op.body["asset"], op.body["amount"]) for op in credited(book))
    seen = Counter(
        (str(r.customer_id), r.asset_name, r.delta_total) for r in ledger if r.kind is EntryKind.DEPOSIT
    )
    unexplained = seen - accepted
    known = {str(op.answer["id"]) for op in book.withdrawals if op.accepted}
    paid_at_once = {
        (str(r.customer_id), -r.delta_total): r.reference
        for r in ledger
        if r.kind is EntryKind.WITHDRAWAL and r.reference not in known
    }
    found = 0
    for op in book.deposits:
        entry = (op.customer, op.body["asset"], op.body["amount"])
        if op.outcome == "unresolved" and unexplained[entry] > 0:
            unexplained[entry] -= 1
            op.outcome, found = "accepted", found + 1
    for op in book.withdrawals:
        reference = paid_at_once.pop((op.customer, op.body["amount"]), None)
        if op.outcome == "unresolved" and reference is not None:
            op.outcome, op.answer, found = "accepted", {"id": reference, "status": "PAID"}, found + 1
    return found


def check_ledger(book: Ledger, orders: dict[str, Order], ledger: list[LedgerEntry], verdict: Verdict) -> None:
    """Credited deposits and paid withdrawals each in the ledger exactly once; per order at most one entry of
    each kind, and the settlement entries exactly for the MATCHED orders; per request the entries its outcome
    calls for."""
    deposits = Counter(
        (str(r.customer_id), r.asset_name, r.delta_total) for r in ledger if r.kind is EntryKind.DEPOSIT
    )
    wanted = Counter((op.customer, op.body["asset"], op.body["amount"]) for op in credited(book))
    for entry, count in (wanted - deposits).items():
        verdict.fail(f"lost deposit: {count} × {entry} accepted but not in the ledger")
    for entry, count in (deposits - wanted).items():
        verdict.fail(f"deposit in the ledger that no accepted request explains: {count} × {entry}")
    paid_out: Counter[tuple[str | None, Decimal]] = Counter(
        (r.reference, -r.delta_total) for r in ledger if r.kind in (EntryKind.WITHDRAWAL, EntryKind.PAYOUT)
    )
    asked: Counter[tuple[str | None, Decimal]] = Counter(
        (str(op.answer["id"]), op.body["amount"]) for op in paid(book)
    )
    verdict.violations += [f"lost withdrawal {w}" for w in asked - paid_out]
    verdict.violations += [
        f"withdrawal in the ledger no accepted request explains: {w}" for w in paid_out - asked
    ]
    _check_request_entries(book, ledger, verdict)
    per_order = Counter((str(r.order_id), r.kind.value) for r in ledger if r.order_id is not None)
    verdict.violations += [f"order {o}: {kind} {n} times" for (o, kind), n in per_order.items() if n > 1]
    for order_id, row in orders.items():
        settled = per_order[(order_id, "SETTLE_DEBIT")] == per_order[(order_id, "SETTLE_CREDIT")] == 1
        if (row.status is OrderStatus.MATCHED) != settled:
            verdict.fail(f"order {order_id} is {row.status} but its settlement entries say otherwise")


# The entries a request leaves in the ledger, by its final status (a withdrawal's payment is checked above).
REQUEST_ENTRIES = {
    ("deposit_request", "APPROVED"): Counter(DEPOSIT=1),
    ("deposit_request", "REJECTED"): Counter(),
    ("withdraw", "PAID"): Counter(RESERVE=1, PAYOUT=1),
    ("withdraw", "REJECTED"): Counter(RESERVE=1, RELEASE=1),
}


def _check_request_entries(book: Ledger, ledger: list[LedgerEntry], verdict: Verdict) -> None:
    by_request: dict[str | None, Counter[str]] = defaultdict(Counter)
    for entry in ledger:
        by_request[entry.reference][entry.kind.value] += 1
    for op in [*book.deposit_requests, *book.withdrawals]:
        status = final_status(book, op)
        if status is None or (op.kind == "withdraw" and op.answer.get("status") == "PAID"):
            continue  # not accepted, or paid at once (one WITHDRAWAL entry, checked above)
        found = by_request[str(op.answer["id"])]
        expected = REQUEST_ENTRIES.get((op.kind, status))
        if expected is not None and found != expected:
            verdict.fail(f"{op.kind} {op.answer['id']} is {status} but its ledger entries are {dict(found)}")


# --- executions at the market's prices ------------------------------------------------------------------


def at_the_quote(order: Order, execution: ExecutionMode) -> bool:
    """True when `order` executes at the market's quote: always but a LIMIT order in `immediate` mode (at its
    limit)."""
    return execution is not ExecutionMode.IMMEDIATE or order.order_type is OrderType.MARKET


def check_executions(orders: dict[str, Order], rules: Rules, verdict: Verdict) -> None:
    """Each MATCHED order executed at a price the market quoted for its symbol by then — a BUY at an ask, a
    SELL at a bid — (`immediate` mode: a LIMIT order at its limit); each one canceled for the collar only
    after an ask beyond what it reserved. Where the record of quotes has a gap, an execution it cannot
    confirm is counted as unverifiable, not failed."""
    unverifiable = improved = 0
    for order_id, order in orders.items():
        price = order.executed_price
        if order.status is OrderStatus.MATCHED and price is not None:
            improved += order.side is Side.BUY and order.buy_price is not None and price < order.buy_price
            if not at_the_quote(order, rules.execution) and price != order.price:
                verdict.fail(f"order {order_id}: executed at {price}, not at its limit {order.price}")
        problem = _unquoted(order, rules) if rules.quotes is not None else None
        if problem is not None and rules.quotes is not None and rules.quotes.gaps(order.asset_name):
            unverifiable += 1
        elif problem is not None:
            verdict.fail(f"order {order_id}: {problem}")
    verdict.figures["executions_unverifiable"] = unverifiable
    verdict.figures["buys_below_their_reservation"] = improved


def _unquoted(order: Order, rules: Rules) -> str | None:
    """What `order` did at a price the market never quoted by then (None: nothing)."""
    quotes, price, by = rules.quotes, order.executed_price, order.updated_at
    assert quotes is not None
    executed = order.status is OrderStatus.MATCHED and at_the_quote(order, rules.execution)
    if executed and price is not None and not quotes.quoted(order.asset_name, order.side, price, by):
        side = "an ask" if order.side is Side.BUY else "a bid"
        return (
            f"{order.side} {order.asset_name} executed at {price}, which the market never quoted as "
            f"{side} before {by.isoformat()}"
        )
    collared = order.status is OrderStatus.CANCELED and order.reason == BEYOND_COLLAR
    reserved = order.reserve_price
    if collared and reserved is not None and not quotes.ask_above(order.asset_name, reserved, by):
        return (
            f"canceled {BEYOND_COLLAR!r}, but no ask above its {reserved} was quoted before {by.isoformat()}"
        )
    return None


def settlement_problem(order: Order, entries: list[LedgerEntry]) -> str | None:
    """Why the ledger entries of a MATCHED `order` are not its settlement at the executed price: a BUY
    reserves size × its limit (or collar price), pays size × executed price and gets the difference back
    (price improvement), and receives its size; a SELL delivers its size and receives size × executed
    price. None: they are."""
    price = order.executed_price
    if price is None:
        return "MATCHED without an executed price"
    amounts: dict[str, Decimal] = defaultdict(Decimal)
    for entry in entries:
        on_usable = entry.kind in (EntryKind.RESERVE, EntryKind.RELEASE)  # they move usable only
        moved = entry.delta_usable if on_usable else entry.delta_total
        amounts[entry.kind.value] = add(amounts[entry.kind.value], abs(moved))
    if order.side is Side.BUY:
        reserved = cost(order.size, order.buy_price) if order.buy_price is not None else ZERO
        paid, received = cost(order.size, price), order.size
    else:
        reserved, paid, received = order.size, order.size, cost(order.size, price)
    expected = {"RESERVE": reserved, "SETTLE_DEBIT": paid, "SETTLE_CREDIT": received}
    if reserved > paid:
        expected["RELEASE"] = sub(reserved, paid)  # a BUY executed below what it reserved
    if dict(amounts) != expected:
        found = {k: str(v) for k, v in sorted(amounts.items())}
        wanted = {k: str(v) for k, v in sorted(expected.items())}
        return f"{order.side} at {price}: ledger {found}, its settlement is {wanted}"
    return None


def check_settlements(orders: dict[str, Order], ledger: list[LedgerEntry], verdict: Verdict) -> None:
    """Each MATCHED order settled exactly at its executed price, a BUY's price improvement given back."""
    by_order: dict[str, list[LedgerEntry]] = defaultdict(list)
    for entry in ledger:
        if entry.order_id is not None:
            by_order[str(entry.order_id)].append(entry)
    for order_id, order in orders.items():
        if order.status is OrderStatus.MATCHED and (problem := settlement_problem(order, by_order[order_id])):
            verdict.fail(f"order {order_id}: {problem}")


def market_figures(orders: dict[str, Order], rules: Rules, faults: FaultLog) -> dict[str, Any]:
    """How the orders ended, by kind; the quotes recorded; executions after the market service's last kill."""
    ends = Counter(
        f"{o.order_type} {o.time_in_force} {o.status}" + (f" ({o.reason.split(':')[0]})" if o.reason else "")
        for o in orders.values()
        if o.order_type is not OrderType.LIMIT or o.time_in_force.value != "GTC" or o.reason
    )
    kills = [t["t"] for t in faults.timeline if t.get("component") == "market"]
    after = [
        o for o in orders.values() if o.status is OrderStatus.MATCHED and kills
        and o.updated_at.timestamp() > max(kills)
    ]  # fmt: skip
    quotes = rules.quotes
    return {
        "endings": dict(sorted(ends.items())),
        "quotes_recorded": len(quotes.quotes) if quotes else None,
        "quote_record_gaps": sum(quotes.gaps(s) for s in quotes.symbols()) if quotes else None,
        "matched_after_last_market_kill": len(after) if kills else None,
    }


async def check_duplicates(conns: dict[str, asyncpg.Connection], faults: FaultLog, verdict: Verdict) -> None:
    """Each injected copy was stored by the broker (a true duplicate) and its event is in the inbox of the
    service that consumes it exactly once (the primary key): the inbox stopped the second delivery."""
    stopped = 0
    for dup in faults.duplicates:
        if dup["dropped_by_broker"]:
            verdict.fail(f"copy of seq {dup['original_seq']} was dropped by the broker: not a true duplicate")
            continue
        consumer = consumer_of(type_of(dup["subject"]))
        service = consumer.name if consumer else "?"
        if not await inbox.recorded(conns[service], uuid.UUID(dup["event_id"])):
            verdict.fail(f"event {dup['event_id']} delivered twice is not in the {service} inbox")
        else:
            stopped += 1
    verdict.figures["duplicates_stopped_by_inbox"] = stopped


async def check_outbox(conns: dict[str, asyncpg.Connection], verdict: Verdict) -> None:
    """Once quiet, the outboxes must be empty (relayed rows are deleted, docs/decisions/004). A row left
    whose event is in its consumer's inbox was relayed but never deleted; one that is not was never
    delivered: a lost event."""
    left = 0
    for service, conn in conns.items():
        for row in await unrelayed(conn):
            left += 1
            consumer = consumer_of(type_of(row.subject))
            consumed = consumer is not None and await inbox.recorded(conns[consumer.name], row.id)
            written = f"{row.created_at:%H:%M:%S.%f}"
            what = f"{service} outbox row {row.id} ({row.subject}, written {written})"
            if consumed:
                verdict.fail(f"{what}: relayed and consumed, but the row was never deleted (orphaned)")
            else:
                verdict.fail(f"{what}: never delivered to its consumer (a lost event)")
    verdict.figures["outbox_rows_left"] = left


async def verify(target: Target, book: Ledger, faults: FaultLog, rules: Rules) -> Verdict:
    verdict = Verdict()
    order_url, account_url = target.database_url("order"), target.database_url("account")
    assert order_url and account_url and target.nats
    conns = {"order": await asyncpg.connect(order_url), "account": await asyncpg.connect(account_url)}
    try:
        rows = {str(o.id): o for o in await order_store.all_orders(conns["order"])}
        orders = check_orders(book, rows, verdict)
        statuses = Counter(o.status.value for o in orders.values())
        verdict.figures["orders"] = {"stored": len(rows), **statuses}
        ledger = await account_store.ledger(conns["account"])
        requests: list[Deposit | Withdrawal] = [
            *await request_store.all_deposits(conns["account"]),
            *await request_store.all_withdrawals(conns["account"]),
        ]
        verdict.figures["undecided_but_decided"] = resolve_undecided(book, requests)
        verdict.figures["unanswered_but_applied"] = resolve_unanswered(book, ledger)
        check_requests(book, requests, verdict)
        verdict.figures["requests"] = dict(Counter(f"{type(r).__name__} {r.status.value}" for r in requests))
        check_money(book, orders, await account_store.balances(conns["account"], None, None), verdict)
        check_ledger(book, orders, ledger, verdict)
        check_settlements(orders, ledger, verdict)
        check_executions(orders, rules, verdict)
        verdict.figures["market"] = market_figures(orders, rules, faults)
        await check_duplicates(conns, faults, verdict)
        await check_outbox(conns, verdict)
        verdict.figures["inbox_rows"] = {s: await inbox.size(c) for s, c in conns.items()}
    finally:
        for conn in conns.values():
            await conn.close()
    audit = await run_audit(order_url, account_url, settle_seconds=30, rules=rules.audit)
    verdict.violations += [f"oms audit: {v}" for v in audit.violations]
    verdict.figures["audit"] = {
        "orders": audit.orders,
        "balances": audit.balances,
        "ledger": audit.ledger_entries,
    }
    broker = await JetStreamBroker.connect(target.nats)
    try:
        letters = await broker.dead_letters()
    finally:
        await broker.close()
    verdict.figures["dead_letters"] = len(letters)
    verdict.violations += [
        f"dead letter {d.seq}: {d.subject} for {d.consumer} after {d.deliveries} deliveries: {d.error}"
        for d in letters
    ]
    return verdict
