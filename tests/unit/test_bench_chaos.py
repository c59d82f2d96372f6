"""The chaos suite's own logic without a system: the fault plan, and that the verifier does catch a lost
order, a doubled order, a doubled deposit and a kuruş out of place."""

from __future__ import annotations

import itertools
import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from oms.account.domain import Asset, EntryKind, LedgerEntry
from oms.account.requests import Deposit, DepositStatus, Stamp, Withdrawal, WithdrawalStatus
from oms.chaos.faults import schedule
from oms.chaos.observe import server_errors
from oms.chaos.verify import (
    Verdict,
    check_ledger,
    check_money,
    check_orders,
    check_requests,
    resolve_unanswered,
)
from oms.chaos.workload import Ledger, Op
from oms.kernel.money import Side
from oms.order.domain import Order, OrderStatus

ALICE = str(uuid.uuid4())
O1, O2, O3 = (str(uuid.uuid4()) for _ in range(3))
T = datetime(2026, 1, 2, tzinfo=UTC)


def test_plan_spreads_the_server_restarts_among_the_kills() -> None:
    plan = schedule(100, 5, 3, random.Random(1))
    assert plan.count("kill") == 100 and plan.count("nats") == 5 and plan.count("postgres") == 3
    servers = [i for i, fault in enumerate(plan) if fault != "kill"]
    assert min(b - a for a, b in itertools.pairwise(servers)) >= 10
    assert schedule(3, 0, 0, random.Random(1)) == ["kill"] * 3


def _order(
    order_id: str, side: str = "BUY", size: str = "2", price: str = "10.25", status: str = "MATCHED"
) -> tuple[Op, Order]:
    terms = {"side": side, "asset": "AAPL", "size": Decimal(size), "price": Decimal(price)}
    op = Op(
        "order", ALICE, terms, key=str(uuid.uuid4()), outcome="accepted", status=200, answer={"id": order_id}
    )
    row = Order(
        id=uuid.UUID(order_id),
        customer_id=uuid.UUID(ALICE),
        asset_name="AAPL",
        side=Side(side),
        size=Decimal(size),
        price=Decimal(price),
        created_at=T,
        updated_at=T,
        status=OrderStatus(status),
        reserved=status == "MATCHED",
        executed_price=Decimal(price) if status == "MATCHED" else None,
    )
    return op, row


def _book() -> tuple[Ledger, dict[str, Order]]:
    book = Ledger()
    buy, buy_row = _order(O1)
    sell, sell_row = _order(O2, side="SELL", size="1", price="12", status="MATCHED")
    book.orders += [buy, sell]
    book.deposits += [
        Op("deposit", ALICE, {"asset": "TRY", "amount": Decimal("100.50")}, outcome="accepted"),
        Op("deposit", ALICE, {"asset": "AAPL", "amount": Decimal(5)}, outcome="accepted"),
    ]
    book.withdrawals.append(
        Op(
            "withdraw",
            ALICE,
            {"amount": Decimal("10.01")},
            outcome="accepted",
            answer={"id": "w1", "status": "PAID"},
        )
    )
    return book, {O1: buy_row, O2: sell_row}


def _balances(try_total: str, aapl: str) -> list[Asset]:
    return [
        Asset(uuid.uuid4(), uuid.UUID(ALICE), name, Decimal(total), Decimal(total))
        for name, total in (("TRY", try_total), ("AAPL", aapl))
    ]


def _ledger(deposits: int = 1) -> list[LedgerEntry]:
    def entry(
        kind: str, asset: str, delta: str, order: str | None = None, ref: str | None = None
    ) -> LedgerEntry:
        order_id = uuid.UUID(order) if order else None
        return LedgerEntry(
            EntryKind(kind), uuid.UUID(ALICE), asset, Decimal(delta), Decimal(0), order_id, ref
        )

    rows = [entry("DEPOSIT", "TRY", "100.50") for _ in range(deposits)]
    rows += [entry("DEPOSIT", "AAPL", "5"), entry("WITHDRAWAL", "TRY", "-10.01", ref="w1")]
    for order in (O1, O2):
        rows += [
            entry("RESERVE", "TRY", "0", order),
            entry("SETTLE_DEBIT", "TRY", "-1", order),
            entry("SETTLE_CREDIT", "AAPL", "1", order),
        ]
    return rows


def test_a_consistent_run_has_no_violation() -> None:
    book, rows = _book()
    verdict = Verdict()
    orders = check_orders(book, rows, verdict)
    # 100.50 − 10.01 − 2 × 10.25 + 1 × 12 = 81.99 TRY; 5 + 2 − 1 = 6 AAPL
    check_money(book, orders, _balances("81.99", "6"), verdict)
    check_ledger(book, orders, _ledger(), verdict)
    assert verdict.violations == []


def test_a_kurus_out_of_place_is_a_violation() -> None:
    book, rows = _book()
    verdict = Verdict()
    check_money(book, check_orders(book, rows, verdict), _balances("81.98", "6"), verdict)
    assert verdict.violations == [f"customer {ALICE} TRY: total 81.98, expected 81.99"]


def test_a_lost_and_a_doubled_order_are_violations() -> None:
    book, rows = _book()
    del rows[O1]
    _, extra = _order(O3)
    extra.size = Decimal(7)
    rows[O3] = extra
    verdict = Verdict()
    check_orders(book, rows, verdict)
    assert any(v.startswith("lost order") for v in verdict.violations)
    assert any("no accepted create asked for it" in v for v in verdict.violations)


def test_a_doubled_deposit_is_a_violation() -> None:
    book, rows = _book()
    verdict = Verdict()
    check_ledger(book, check_orders(book, rows, verdict), _ledger(deposits=2), verdict)
    assert verdict.violations == [
        f"deposit in the ledger that no accepted request explains: 1 × ('{ALICE}', 'TRY', Decimal('100.50'))"
    ]


def test_an_accepted_cancel_of_a_matched_order_is_a_violation() -> None:
    book, rows = _book()
    book.cancels.append(Op("cancel", ALICE, {"order_id": O1}, outcome="accepted", status=200))
    verdict = Verdict()
    check_orders(book, rows, verdict)
    assert verdict.violations == [f"cancel of {O1} was accepted but the order is not CANCELED"]


def test_an_unanswered_deposit_counts_once_if_the_ledger_shows_it() -> None:
    book, rows = _book()
    lost_answer = Op("deposit", ALICE, {"asset": "TRY", "amount": Decimal("7.77")})
    never_arrived = Op("deposit", ALICE, {"asset": "TRY", "amount": Decimal("8.88")})
    book.deposits += [lost_answer, never_arrived]
    ledger = _ledger()
    ledger.append(replace(ledger[0], delta_total=Decimal("7.77")))
    assert resolve_unanswered(book, ledger) == 1
    assert (lost_answer.outcome, never_arrived.outcome) == ("accepted", "unresolved")
    verdict = Verdict()
    check_ledger(book, check_orders(book, rows, verdict), ledger, verdict)
    assert verdict.violations == []


# --- deposit and withdrawal requests ---------------------------------------------------------------------

D1, W2 = str(uuid.uuid4()), str(uuid.uuid4())
ADMIN = uuid.uuid4()


def _with_requests(withdrawal_status: str = "PAID") -> tuple[Ledger, list[Deposit | Withdrawal]]:
    """Alice asked to deposit 40 (approved) and an admin asked to pay her 2000 out (decided as given)."""
    book = Ledger()
    asked = Op("deposit_request", ALICE, {"asset": "TRY", "amount": Decimal(40)}, outcome="accepted")
    asked.answer = {"id": D1, "status": "REQUESTED"}
    large = Op("withdraw", ALICE, {"amount": Decimal(2000)}, outcome="accepted", answer={"id": W2})
    large.answer["status"] = "REQUESTED"
    book.deposit_requests.append(asked)
    book.withdrawals.append(large)
    for request_id, kind, status in ((D1, "deposit", "APPROVED"), (W2, "withdrawal", "PAID")):
        decision = Op("decision", ALICE, {"kind": kind, "id": request_id, "verdict": "approve"})
        decision.outcome, decision.answer = "accepted", {"status": status}
        book.decisions.append(decision)
    stamp = Stamp(uuid.UUID(ALICE), T)
    decided = Stamp(ADMIN, T)
    requests: list[Deposit | Withdrawal] = [
        Deposit(uuid.UUID(D1), uuid.UUID(ALICE), "TRY", Decimal(40), stamp, DepositStatus.APPROVED, decided),
        Withdrawal(
            uuid.UUID(W2),
            uuid.UUID(ALICE),
            Decimal(2000),
            "TR33",
            Stamp(ADMIN, T),
            WithdrawalStatus(withdrawal_status),
            decided,
        ),
    ]
    return book, requests


def test_requests_decided_as_answered_are_clean_and_counted_in_the_money() -> None:
    book, requests = _with_requests()
    book.deposits.append(Op("deposit", ALICE, {"asset": "TRY", "amount": Decimal(3000)}, outcome="accepted"))
    verdict = Verdict()
    check_requests(book, requests, verdict)
    balance = Asset(uuid.uuid4(), uuid.UUID(ALICE), "TRY", Decimal(1040), Decimal(1040))  # 3000 + 40 − 2000
    check_money(book, {}, [balance], verdict)
    assert verdict.violations == []


def test_a_request_stored_otherwise_than_decided_is_a_violation() -> None:
    book, requests = _with_requests(withdrawal_status="REQUESTED")
    verdict = Verdict()
    check_requests(book, requests, verdict)
    assert verdict.violations == [f"withdraw {W2} of 2000 is REQUESTED, but the workload was answered PAID"]


def test_an_own_approval_that_was_not_refused_is_a_violation() -> None:
    book, requests = _with_requests()
    own = Op("four_eyes", ALICE, {"id": W2}, outcome="accepted", status=200, answer={"status": "PAID"})
    book.four_eyes.append(own)
    verdict = Verdict()
    check_requests(book, requests, verdict)
    assert verdict.violations == [
        f"the admin who asked for withdrawal {W2} approved it: 200 {{'status': 'PAID'}}"
    ]


def test_a_request_nobody_made_is_a_violation() -> None:
    book, requests = _with_requests()
    book.deposit_requests.clear()
    book.decisions.pop(0)
    verdict = Verdict()
    check_requests(book, requests, verdict)
    assert verdict.violations == [f"deposit {D1} of 40 that no request explains"]


def test_an_approved_request_without_its_ledger_entries_is_a_violation() -> None:
    book, _ = _with_requests()
    verdict = Verdict()
    check_ledger(book, {}, [], verdict)
    assert f"deposit_request {D1} is APPROVED but its ledger entries are {{}}" in verdict.violations
    assert f"withdraw {W2} is PAID but its ledger entries are {{}}" in verdict.violations


def test_server_errors_are_read_from_the_services_json_logs(tmp_path: Path) -> None:
    (tmp_path / "order.log").write_text(
        '{"level": "info", "component": "order", "message": "Started server process [1]"}\n'
        '{"level": "error", "component": "order", "message": "unhandled error on POST /api/v1/orders",'
        ' "exception": "Traceback (most recent call last):\\n  ...\\nValueError: boom"}\n'
        "not json at all\n"
    )
    (tmp_path / "postgres.log").write_text("LOG:  database system is ready\n")
    assert server_errors(tmp_path) == ["order: unhandled error on POST /api/v1/orders: ValueError: boom"]
