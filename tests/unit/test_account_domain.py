from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from oms.account.domain import (
    MAX_DEPOSIT,
    NOT_RESERVED_BEFORE_CANCEL,
    NOTHING,
    Asset,
    Effect,
    EntryKind,
    FundsRejected,
    FundsReserved,
    LedgerEntry,
    OrderTerms,
    Problem,
    Refused,
    Reservation,
    ReservationStatus,
    Tombstone,
    deposit,
    release_canceled_order,
    release_reservation,
    reserve_funds,
    settle,
    withdraw,
)
from oms.account.requests import (
    Deposit,
    DepositStatus,
    Stamp,
    Step,
    Withdrawal,
    WithdrawalStatus,
    approve_deposit,
    approve_withdrawal,
    deposit_at_once,
    reject_deposit,
    reject_withdrawal,
    request_deposit,
    request_withdrawal,
)
from oms.kernel.events import OrderCanceled, OrderMatched
from oms.kernel.market import Instrument, Quote
from oms.kernel.money import CASH, OrderType, Side, TimeInForce, add, cost, sub
from oms.kernel.settings import ExecutionMode
from oms.order.domain import (
    BEYOND_COLLAR,
    CANCELED,
    EXPIRED,
    MATCHED,
    PENDING,
    Listing,
    MarketUnavailable,
    NotMarketable,
    Order,
    OrderEvent,
    OrderInvalid,
    OrderPlaced,
    PlaceOrder,
    ReleaseRequested,
    TransitionRefused,
    place_order,
)

CUSTOMER = uuid.uuid4()
IBAN = "TR330006100519786457841326"
NOW = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)
D = Decimal
HELD, RELEASED, SETTLED = ReservationStatus.HELD, ReservationStatus.RELEASED, ReservationStatus.SETTLED


def balance(name: str, total: str, usable: str | None = None, customer: uuid.UUID = CUSTOMER) -> Asset:
    return Asset(uuid.uuid4(), customer, name, D(total), D(usable if usable is not None else total))


def terms(side: Side = Side.BUY, size: str = "10", price: str = "2.5", asset: str = "AAPL") -> OrderTerms:
    return OrderTerms(uuid.uuid4(), CUSTOMER, asset, side, D(size), D(price))


def by_name(*assets: Asset) -> dict[str, Asset]:
    return {a.asset_name: a for a in assets}


def changed(effect: Effect, name: str) -> Asset:
    (asset,) = [a for a in effect.assets if a.asset_name == name]
    return asset


def sizes(asset: Asset) -> tuple[Decimal, Decimal]:
    return asset.total_size, asset.usable_size


def assert_ledger_matches(before: Iterable[Asset], effect: Effect) -> None:
    """Each changed balance moved by exactly the sum of its ledger entries."""
    old = {a.asset_name: a for a in before}
    for asset in effect.assets:
        start = old.get(asset.asset_name)
        total, usable = (start.total_size, start.usable_size) if start else (D(0), D(0))
        for entry in effect.entries:
            if entry.asset_name == asset.asset_name:
                total, usable = add(total, entry.delta_total), add(usable, entry.delta_usable)
        assert (total, usable) == sizes(asset)
    assert {e.asset_name for e in effect.entries} == {a.asset_name for a in effect.assets}


# --- Asset -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "usable"), [("1", "2"), ("1", "-1"), ("-1", "-1")])
def test_asset_out_of_bounds_sizes_raise(total: str, usable: str) -> None:
    with pytest.raises(ValueError, match="out of bounds"):
        balance(CASH, total, usable)


def test_asset_locked_size_is_total_minus_usable() -> None:
    assert balance(CASH, "10", "4").locked_size == D(6)


# --- Deposit -----------------------------------------------------------------------------------------------


def test_deposit_new_asset_created_usable_in_full() -> None:
    effect = deposit(None, CUSTOMER, CASH, D("100.5"), reference="dep-1")
    assert sizes(changed(effect, CASH)) == (D("100.5"), D("100.5"))
    assert isinstance(changed(effect, CASH).id, uuid.UUID)  # what the API answers an admin's deposit with
    assert changed(deposit(None, CUSTOMER, "AAPL", D(1)), "AAPL").id != changed(effect, CASH).id
    assert effect.entries == (
        LedgerEntry(EntryKind.DEPOSIT, CUSTOMER, CASH, D("100.5"), D("100.5"), None, "dep-1"),
    )
    assert (effect.reservation, effect.events, effect.refused) == (None, (), None)


def test_deposit_existing_asset_both_sizes_added_same_id() -> None:
    cash = balance(CASH, "10", "4")
    effect = deposit(cash, CUSTOMER, CASH, D("5"))
    assert changed(effect, CASH).id == cash.id
    assert sizes(changed(effect, CASH)) == (D(15), D(9))
    assert_ledger_matches([cash], effect)


def test_deposit_of_the_largest_amount_with_the_finest_fraction_is_credited() -> None:
    effect = deposit(None, CUSTOMER, CASH, MAX_DEPOSIT)
    assert sizes(changed(effect, CASH)) == (MAX_DEPOSIT, MAX_DEPOSIT)
    assert deposit(None, CUSTOMER, CASH, D("0.00000001")).refused is None


@pytest.mark.parametrize(
    ("name", "amount", "message"),
    [
        (CASH, "0", "must be greater than 0"),
        (CASH, "-0", "must be greater than 0"),
        (CASH, "-1", "must be greater than 0"),
        (CASH, "NaN", "must be greater than 0"),
        (CASH, "1000000000000000.00000001", "at most 1000000000000000"),
        (CASH, "99999999999999999999.99999999", "at most 1000000000000000"),
        (CASH, "0.000000001", "at most 8 decimal places"),
        ("aapl", "1", "asset name"),
    ],
)
def test_deposit_invalid_amount_refused_nothing_changed(name: str, amount: str, message: str) -> None:
    effect = deposit(None, CUSTOMER, name, D(amount))
    assert effect.refused is not None
    assert effect.refused.problem is Problem.INVALID
    assert message in effect.refused.message
    assert not effect.changed


def test_deposit_of_nothing_refused_with_the_reason_the_client_sees() -> None:
    assert deposit(None, CUSTOMER, CASH, D(0)).refused == Refused(
        Problem.INVALID, "amount must be greater than 0"
    )


def test_deposit_other_customers_asset_raises() -> None:
    with pytest.raises(ValueError, match="given for"):
        deposit(balance(CASH, "1", customer=uuid.uuid4()), CUSTOMER, CASH, D(1))


# --- Withdraw ----------------------------------------------------------------------------------------------


def test_withdraw_enough_usable_cash_total_and_usable_reduced() -> None:
    cash = balance(CASH, "100", "60")
    effect = withdraw(cash, D("60"), reference="wd-1")
    assert sizes(changed(effect, CASH)) == (D(40), D(0))
    assert effect.entries[0].kind is EntryKind.WITHDRAWAL
    assert effect.entries[0].reference == "wd-1"
    assert_ledger_matches([cash], effect)


def test_withdraw_more_than_usable_refused_as_insufficient() -> None:
    effect = withdraw(balance(CASH, "100", "60"), D("60.01"))
    assert effect.refused is not None
    assert effect.refused.problem is Problem.INSUFFICIENT
    assert effect.refused.message == "insufficient usable TRY: 60 usable, 60.01 requested"
    assert not effect.changed


def test_withdraw_no_cash_asset_refused_as_insufficient() -> None:
    effect = withdraw(None, D(1))
    assert effect.refused == Refused(Problem.INSUFFICIENT, "insufficient usable TRY: 0 usable, 1 requested")


@pytest.mark.parametrize("amount", ["0", "-1"])
def test_withdraw_non_positive_amount_refused_as_invalid(amount: str) -> None:
    effect = withdraw(balance(CASH, "100"), D(amount))
    assert effect.refused == Refused(Problem.INVALID, "amount must be greater than 0")


def test_withdraw_from_non_cash_asset_raises() -> None:
    with pytest.raises(ValueError, match="paid from TRY"):
        withdraw(balance("AAPL", "10"), D(1))


# --- Reserve -----------------------------------------------------------------------------------------------


def test_reserve_funds_buy_holds_size_times_price_cash() -> None:
    cash, order = balance(CASH, "100"), terms(Side.BUY, "10", "2.5")
    effect = reserve_funds(order, by_name(cash), now=NOW)
    held = effect.reservation
    assert held is not None
    assert (held.order_id, held.asset_name, held.amount, held.status) == (order.order_id, CASH, D(25), HELD)
    assert sizes(changed(effect, CASH)) == (D(100), D(75))
    assert effect.events == (
        FundsReserved(
            order_id=order.order_id,
            customer_id=CUSTOMER,
            occurred_at=NOW,
            reservation_id=held.id,
            asset_name=CASH,
            amount=D(25),
        ),
    )
    assert effect.entries[0].kind is EntryKind.RESERVE
    assert (effect.entries[0].order_id, effect.entries[0].reference) == (order.order_id, str(held.id))
    assert_ledger_matches([cash], effect)


def test_reserve_funds_sell_holds_size_of_asset() -> None:
    shares, order = balance("AAPL", "10"), terms(Side.SELL, "4", "2.5")
    effect = reserve_funds(order, by_name(shares, balance(CASH, "0")), now=NOW)
    assert effect.reservation is not None
    assert (effect.reservation.asset_name, effect.reservation.amount) == ("AAPL", D(4))
    assert sizes(changed(effect, "AAPL")) == (D(10), D(6))
    assert_ledger_matches([shares], effect)


def test_reserve_funds_below_one_try_a_share_holds_the_exact_cost() -> None:
    effect = reserve_funds(terms(Side.BUY, "3", "0.5"), by_name(balance(CASH, "2")), now=NOW)
    assert sizes(changed(effect, CASH)) == (D(2), D("0.5"))


def test_reserve_funds_exact_usable_reserved_to_zero() -> None:
    effect = reserve_funds(terms(Side.BUY, "10", "2.5"), by_name(balance(CASH, "25")), now=NOW)
    assert sizes(changed(effect, CASH)) == (D(25), D(0))


@pytest.mark.parametrize(
    ("order", "assets", "reason"),
    [
        (
            terms(Side.BUY, "10", "2.5"),
            [balance(CASH, "30", "24.99")],
            "insufficient usable TRY: 25 needed, 24.99",
        ),
        (terms(Side.BUY), [], "no TRY held: 25 TRY needed"),
        (terms(Side.SELL, "4"), [balance("AAPL", "3")], "insufficient usable AAPL: 4 needed, 3 usable"),
        (terms(Side.SELL, "4"), [balance(CASH, "100")], "no AAPL held"),
        (terms(asset=CASH), [balance(CASH, "100")], "TRY cannot be traded"),
        (terms(size="0"), [balance(CASH, "100")], "size and price must be greater than 0"),
        (terms(price="0"), [balance(CASH, "100")], "size and price must be greater than 0"),
    ],
)
def test_reserve_funds_not_coverable_rejected_and_remembered(
    order: OrderTerms, assets: list[Asset], reason: str
) -> None:
    effect = reserve_funds(order, by_name(*assets), now=NOW)
    (event,) = effect.events
    assert isinstance(event, FundsRejected)
    assert event.reason.startswith(reason)
    assert effect.tombstone == Tombstone(order.order_id, CUSTOMER, event.reason)
    assert (effect.assets, effect.reservation, effect.entries) == ((), None, ())


def test_reserve_funds_after_cancel_tombstone_rejected_not_reserved() -> None:
    order = terms()
    tombstone = Tombstone(order.order_id, CUSTOMER, NOT_RESERVED_BEFORE_CANCEL)
    effect = reserve_funds(order, by_name(balance(CASH, "100")), tombstone=tombstone, now=NOW)
    assert effect.events == (
        FundsRejected(
            order_id=order.order_id, customer_id=CUSTOMER, occurred_at=NOW, reason=NOT_RESERVED_BEFORE_CANCEL
        ),
    )
    assert not effect.changed


def test_reserve_funds_already_reserved_nothing_more() -> None:
    order, cash = terms(), balance(CASH, "100", "75")
    held = Reservation(uuid.uuid4(), order.order_id, CUSTOMER, CASH, D(25))
    assert reserve_funds(order, by_name(cash), reservation=held, now=NOW) == NOTHING


# --- Release -----------------------------------------------------------------------------------------------


def held_for(order: OrderTerms, status: ReservationStatus = HELD) -> Reservation:
    return Reservation(
        uuid.uuid4(), order.order_id, CUSTOMER, order.reserved_asset, order.reserved_amount, status
    )


def test_release_reservation_held_amount_usable_again() -> None:
    order, cash = terms(), balance(CASH, "100", "75")
    effect = release_reservation(held_for(order), cash)
    assert sizes(changed(effect, CASH)) == (D(100), D(100))
    assert effect.reservation is not None
    assert effect.reservation.status is RELEASED
    assert effect.entries[0].kind is EntryKind.RELEASE
    assert_ledger_matches([cash], effect)


def test_release_reservation_second_time_nothing() -> None:
    assert release_reservation(held_for(terms(), RELEASED), balance(CASH, "100")) == NOTHING


def test_release_reservation_settled_refused_as_inconsistent() -> None:
    effect = release_reservation(held_for(terms(), SETTLED), balance(CASH, "100"))
    assert effect.refused is not None
    assert effect.refused.problem is Problem.INCONSISTENT


def test_release_reservation_missing_balance_raises() -> None:
    with pytest.raises(ValueError, match="no TRY balance"):
        release_reservation(held_for(terms()), None)


def test_release_canceled_order_held_reservation_released() -> None:
    order, cash = terms(), balance(CASH, "100", "75")
    effect = release_canceled_order(
        order.order_id, CUSTOMER, reservation=held_for(order), tombstone=None, asset=cash
    )
    assert sizes(changed(effect, CASH)) == (D(100), D(100))


def test_release_canceled_order_nothing_reserved_yet_tombstone_left() -> None:
    order_id = uuid.uuid4()
    effect = release_canceled_order(order_id, CUSTOMER, reservation=None, tombstone=None, asset=None)
    assert effect == Effect(tombstone=Tombstone(order_id, CUSTOMER, NOT_RESERVED_BEFORE_CANCEL))


def test_release_canceled_order_already_tombstoned_nothing() -> None:
    order_id = uuid.uuid4()
    tombstone = Tombstone(order_id, CUSTOMER, "insufficient usable TRY")
    assert (
        release_canceled_order(order_id, CUSTOMER, reservation=None, tombstone=tombstone, asset=None)
        == NOTHING
    )


# --- Settle ------------------------------------------------------------------------------------------------


def test_settle_buy_cash_paid_and_asset_created() -> None:
    order = terms(Side.BUY, "10", "2.5")
    cash = balance(CASH, "100", "75")
    effect = settle(held_for(order), order, by_name(cash))
    assert sizes(changed(effect, CASH)) == (D(75), D(75))
    assert sizes(changed(effect, "AAPL")) == (D(10), D(10))
    assert effect.reservation is not None
    assert effect.reservation.status is SETTLED
    assert [e.kind for e in effect.entries] == [EntryKind.SETTLE_DEBIT, EntryKind.SETTLE_CREDIT]
    assert_ledger_matches([cash], effect)


def test_settle_entries_name_the_order_and_the_reservation_they_settle() -> None:
    order = terms(Side.BUY, "10", "2.5")
    held = held_for(order)
    effect = settle(held, order, by_name(balance(CASH, "100", "75")))
    assert {(e.order_id, e.reference) for e in effect.entries} == {(order.order_id, str(held.id))}


def test_settle_buy_existing_asset_increased_same_id() -> None:
    order = terms(Side.BUY, "10", "2.5")
    shares = balance("AAPL", "5", "1")
    effect = settle(held_for(order), order, by_name(balance(CASH, "25", "0"), shares))
    assert changed(effect, "AAPL").id == shares.id
    assert sizes(changed(effect, "AAPL")) == (D(15), D(11))


def test_settle_sell_asset_delivered_and_proceeds_credited() -> None:
    order = terms(Side.SELL, "4", "2.5")
    shares = balance("AAPL", "10", "6")
    effect = settle(held_for(order), order, by_name(shares))
    assert sizes(changed(effect, "AAPL")) == (D(6), D(6))
    assert sizes(changed(effect, CASH)) == (D(10), D(10))
    assert_ledger_matches([shares], effect)


def test_settle_buy_below_what_it_reserved_price_improvement_released() -> None:
    reserved = terms(Side.BUY, "10", "2.5")  # 25 TRY held
    executed = replace(reserved, price=D("2.31"))
    cash = balance(CASH, "100", "75")
    effect = settle(held_for(reserved), executed, by_name(cash))
    assert sizes(changed(effect, CASH)) == (D("76.9"), D("76.9"))
    assert sizes(changed(effect, "AAPL")) == (D(10), D(10))
    assert [(e.kind, e.delta_total, e.delta_usable) for e in effect.entries] == [
        (EntryKind.SETTLE_DEBIT, D("-23.10"), D(0)),
        (EntryKind.RELEASE, D(0), D("1.90")),
        (EntryKind.SETTLE_CREDIT, D(10), D(10)),
    ]
    assert_ledger_matches([cash], effect)


def test_settle_sell_above_its_limit_paid_the_executed_price() -> None:
    reserved = terms(Side.SELL, "4", "2.5")
    shares = balance("AAPL", "10", "6")
    effect = settle(held_for(reserved), replace(reserved, price=D("2.75")), by_name(shares))
    assert sizes(changed(effect, "AAPL")) == (D(6), D(6))
    assert sizes(changed(effect, CASH)) == (D(11), D(11))
    assert [e.kind for e in effect.entries] == [EntryKind.SETTLE_DEBIT, EntryKind.SETTLE_CREDIT]


def test_settle_sell_of_another_size_than_reserved_inconsistent() -> None:
    reserved = terms(Side.SELL, "4", "2.5")
    effect = settle(held_for(reserved), replace(reserved, size=D(5)), by_name(balance("AAPL", "10", "6")))
    assert effect.refused is not None and effect.refused.problem is Problem.INCONSISTENT


def test_reserve_funds_market_sell_reserves_its_size() -> None:
    order = replace(terms(Side.SELL, "4", "1"), price=None)
    effect = reserve_funds(order, by_name(balance("AAPL", "10")), now=NOW)
    assert effect.reservation is not None and effect.reservation.amount == D(4)


def test_settle_exact_cost_no_rounding() -> None:
    order = terms(Side.SELL, "99999999999999999999.99999999", "99999999999999999999.99999999")
    shares = balance("AAPL", str(order.size), "0")
    effect = settle(held_for(order), order, by_name(shares))
    assert changed(effect, CASH).total_size == D("9999999999999999999999999998000000000000.0000000000000001")


def test_settle_already_settled_nothing() -> None:
    order = terms()
    assert settle(held_for(order, SETTLED), order, by_name(balance(CASH, "100"))) == NOTHING


@pytest.mark.parametrize(
    ("reservation", "message"),
    [
        (None, "nothing is reserved"),
        ("released", "reservation was released"),
        ("wrong amount", "more than its reservation"),
    ],
)
def test_settle_contradicting_state_refused_as_inconsistent(reservation: str | None, message: str) -> None:
    order = terms()
    held = None
    if reservation == "released":
        held = held_for(order, RELEASED)
    elif reservation == "wrong amount":
        held = Reservation(uuid.uuid4(), order.order_id, CUSTOMER, CASH, D(24))
    effect = settle(held, order, by_name(balance(CASH, "100", "75")))
    assert effect.refused is not None
    assert (effect.refused.problem, effect.changed) == (Problem.INCONSISTENT, False)
    assert message in effect.refused.message


# --- Both services, any interleaving -----------------------------------------------------------------------
# The order and account domains driven together the way their handlers will drive them, with every event
# delivered late, out of order or twice, and no inbox to hide duplicates: the domain alone must cope.

CUSTOMERS = (uuid.UUID(int=1), uuid.UUID(int=2))
ADMINS = (uuid.UUID(int=101), uuid.UUID(int=102))
THRESHOLD = D(300)  # withdrawals above it wait for an admin
ASSETS = (CASH, "AAPL", "MSFT")
T_START = datetime(2026, 1, 2, tzinfo=UTC)
amounts = st.decimals(min_value=0, max_value=1000, places=2)
sizes_ = st.decimals(min_value=D("0.01"), max_value=20, places=2)
prices = st.decimals(min_value=D("0.0001"), max_value=10, places=4)
COLLAR = D("0.05")


def instrument(symbol: str) -> Instrument:
    """Rules loose enough for any drawn order: the machine checks money and lifecycle, not tick or band."""
    return Instrument(
        symbol=symbol, name=symbol, tick_size=D("0.0001"), lot_size=D("0.01"), price_band_percent=D(100),
        reference_price=D(5),
    )  # fmt: skip


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.mode = ExecutionMode.IMMEDIATE
        self.assets: dict[tuple[uuid.UUID, str], Asset] = {}
        self.reservations: dict[uuid.UUID, Reservation] = {}
        self.tombstones: dict[uuid.UUID, Tombstone] = {}
        self.ledger: list[LedgerEntry] = []
        self.orders: dict[uuid.UUID, Order] = {}
        self.inflight: list[tuple[str, uuid.UUID]] = []  # (event type, order id) on its way
        self.delivered: list[tuple[str, uuid.UUID]] = []
        self.deposits: dict[uuid.UUID, Deposit] = {}
        self.withdrawals: dict[uuid.UUID, Withdrawal] = {}
        self.clock = T_START
        self.quotes: dict[str, Quote] = {}
        self.executions: dict[uuid.UUID, int] = {}  # order.matched events made, per order
        # Per executed order: the symbol's latest quote when it executed, or None when at its limit.
        self.executed_at: dict[uuid.UUID, Quote | None] = {}
        self.closing = False  # the close is expiring DAY orders

    @initialize(mode=st.sampled_from(list(ExecutionMode)), funded=st.booleans())
    def start(self, mode: ExecutionMode, funded: bool) -> None:
        self.begin(mode, funded)

    def begin(self, mode: ExecutionMode, funded: bool) -> None:
        self.mode = mode
        for customer in CUSTOMERS if funded else ():  # most orders then find their funds
            for name, size in ((CASH, D(2000)), ("AAPL", D(40)), ("MSFT", D(40))):
                self.credit(ADMINS[0], customer, name, size)

    # --- what users and admins do ---

    @rule(
        admin=st.sampled_from(ADMINS),
        customer=st.sampled_from(CUSTOMERS),
        name=st.sampled_from(ASSETS),
        amount=amounts,
    )
    def credit(self, admin: uuid.UUID, customer: uuid.UUID, name: str, amount: Decimal) -> None:
        """An admin's deposit: credited at once."""
        asked = Stamp(admin, self.tick())
        credited = deposit_at_once(self.assets.get((customer, name)), customer, name, amount, asked)
        self.take(credited, expected=Problem.INVALID if amount == 0 else None)

    @rule(customer=st.sampled_from(CUSTOMERS), amount=amounts)
    def request_a_deposit(self, customer: uuid.UUID, amount: Decimal) -> None:
        requested = request_deposit(customer, CASH, amount, Stamp(customer, self.tick()))
        if isinstance(requested, Deposit):
            self.deposits[requested.id] = requested
        else:
            assert requested.problem is Problem.INVALID and amount == 0

    @precondition(lambda self: bool(self.deposits))
    @rule(data=st.data(), approve=st.booleans())
    def decide_a_deposit(self, data: st.DataObject, approve: bool) -> None:
        """Any deposit, decided by either admin or by its own maker: only REQUESTED ones are decided, once,
        and an approval never by the one who asked."""
        request = data.draw(st.sampled_from(list(self.deposits.values())))
        decided = Stamp(data.draw(st.sampled_from([*ADMINS, request.requested.by])), self.tick())
        asset = self.assets.get((request.customer_id, request.asset_name))
        step = approve_deposit(request, asset, decided) if approve else reject_deposit(request, decided)
        self.take(step, expected=self.refusal(request, decided, approve))

    @rule(by_admin=st.booleans(), customer=st.sampled_from(CUSTOMERS), amount=amounts)
    def withdraw(self, by_admin: bool, customer: uuid.UUID, amount: Decimal) -> None:
        """Up to the threshold paid at once; above it held until an admin decides."""
        asked = Stamp(ADMINS[0] if by_admin else customer, self.tick())
        cash = self.assets.get((customer, CASH))
        step = request_withdrawal(cash, customer, amount, IBAN, asked, threshold=THRESHOLD)
        usable = cash.usable_size if cash else D(0)
        expected = Problem.INVALID if amount == 0 else Problem.INSUFFICIENT if amount > usable else None
        self.take(step, expected=expected)

    @precondition(lambda self: bool(self.withdrawals))
    @rule(data=st.data(), approve=st.booleans())
    def decide_a_withdrawal(self, data: st.DataObject, approve: bool) -> None:
        request = data.draw(st.sampled_from(list(self.withdrawals.values())))
        decided = Stamp(data.draw(st.sampled_from([*ADMINS, request.requested.by])), self.tick())
        hold = next((r for r in self.reservations.values() if r.withdrawal_id == request.id), None)
        cash = self.assets.get((request.customer_id, CASH))
        decide = approve_withdrawal if approve else reject_withdrawal
        self.take(decide(request, hold, cash, decided), expected=self.refusal(request, decided, approve))

    @staticmethod
    def refusal(request: Deposit | Withdrawal, decided: Stamp, approve: bool) -> Problem | None:
        if request.status != "REQUESTED":
            return Problem.DECIDED
        return Problem.FOUR_EYES if approve and decided.by == request.requested.by else None

    def take(self, step: Step[Any] | Refused, expected: Problem | None = None) -> None:
        """Store a request's step, or check that it was refused for the `expected` reason."""
        if isinstance(step, Refused):
            assert step.problem is expected, step
            return
        assert expected is None, f"{step.request} was not refused ({expected})"
        request = step.request
        table: dict[uuid.UUID, Any] = self.deposits if isinstance(request, Deposit) else self.withdrawals
        table[request.id] = request
        self.store(step.effect)
        assert all(entry.reference == str(request.id) for entry in step.effect.entries)

    @rule(
        customer=st.sampled_from(CUSTOMERS),
        name=st.sampled_from(ASSETS[1:]),
        side=st.sampled_from(list(Side)),
        size=sizes_,
        price=prices,
        order_type=st.sampled_from(list(OrderType)),
        time_in_force=st.sampled_from(list(TimeInForce)),
    )
    def place(
        self,
        customer: uuid.UUID,
        name: str,
        side: Side,
        size: Decimal,
        price: Decimal,
        order_type: OrderType,
        time_in_force: TimeInForce,
    ) -> None:
        limit = price if order_type is OrderType.LIMIT else None
        command = PlaceOrder(customer, name, side, size, limit, order_type, time_in_force)
        listing = Listing(instrument(name), self.quotes.get(name), COLLAR)
        placed = place_order(command, self.tick(), listing=listing)
        if isinstance(placed, MarketUnavailable):
            assert order_type is OrderType.MARKET and name not in self.quotes
            return
        if isinstance(placed, OrderInvalid):  # a limit further than the band from the last price
            assert [p for p in placed.problems if "outside the price band" not in p] == []
            return
        self.orders[placed.order.id] = placed.order
        self.send([placed.event])

    @rule(name=st.sampled_from(ASSETS[1:]), bid=prices, spread=st.integers(min_value=1, max_value=500))
    def quote(self, name: str, bid: Decimal, spread: int) -> None:
        """The market moves; in `market` mode each resting order of the symbol meets the new quote."""
        self.publish(name, bid, add(bid, D(spread).scaleb(-4)))

    @precondition(lambda self: any(o.status is PENDING and o.price for o in self.orders.values()))
    @rule(data=st.data(), through=st.integers(min_value=0, max_value=300), spread=st.integers(1, 50))
    def quote_through(self, data: st.DataObject, through: int, spread: int) -> None:
        """The market moves `through` ticks past a PENDING order's limit: in `market` mode it executes at the
        new quote, now if it rests or once its funds are reserved (a BUY at the ask, at or below its limit:
        what it reserved beyond is given back)."""
        pending = [o for o in self.orders.values() if o.status is PENDING and o.price]
        order = data.draw(st.sampled_from(pending))
        assert order.price is not None
        tick, past = D("0.0001"), D(through).scaleb(-4)
        if order.side is Side.BUY:
            ask = max(sub(order.price, past), D(spread + 1) * tick)
            self.publish(order.asset_name, sub(ask, D(spread) * tick), ask)
        else:
            bid = add(order.price, past)
            self.publish(order.asset_name, bid, add(bid, D(spread) * tick))

    def publish(self, name: str, bid: Decimal, ask: Decimal) -> None:
        latest = self.quotes.get(name)
        sequence = latest.sequence + 1 if latest else 1
        quote = Quote(symbol=name, bid=bid, ask=ask, last=bid, time=self.tick(), sequence=sequence)
        self.quotes[name] = quote
        if self.mode is ExecutionMode.MARKET:
            for order in self.orders.values():
                if order.asset_name == name and order.rests:
                    self.send(order.meet(quote, self.tick()))

    @rule()
    def close(self) -> None:
        """The market closes: DAY orders still PENDING expire."""
        self.closing = True
        for order in self.orders.values():
            self.send(order.expire(self.tick()))
        self.closing = False

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        order = self.pick_order(data)
        if order:
            self.send_if_applied(order.cancel("canceled by customer", self.tick()))

    @precondition(lambda self: bool(self.ready_orders()))
    @rule(data=st.data())
    def admin_match(self, data: st.DataObject) -> None:
        """An admin's match at the quote: refused (nothing changes) unless the quote crosses the order."""
        order = data.draw(st.sampled_from(self.ready_orders()))
        before = (order.status, order.updated_at)
        result = order.match_at(self.quotes.get(order.asset_name), self.tick())
        if isinstance(result, NotMarketable):
            assert (order.status, order.updated_at) == before
        self.send_if_applied(result)

    @rule(data=st.data())
    def admin_match_any(self, data: st.DataObject) -> None:
        """An admin's match where the service knows no market: at the limit price."""
        order = self.pick_order(data)
        if order:
            self.send_if_applied(order.match(self.tick()), at_limit=True)

    def ready_orders(self) -> list[Order]:
        return [o for o in self.orders.values() if o.reserved and o.status is PENDING]

    # --- the broker: any message, any order, possibly twice ---

    @precondition(lambda self: bool(self.inflight))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(min_value=0, max_value=len(self.inflight) - 1))
        self.handle(*self.inflight.pop(index))

    @precondition(lambda self: bool(self.delivered))
    @rule(data=st.data())
    def deliver_again(self, data: st.DataObject) -> None:
        """An at-least-once broker: any message already handled may come back, however late."""
        self.handle(*data.draw(st.sampled_from(self.delivered)))

    @precondition(lambda self: bool(self.racing_orders()))
    @rule(data=st.data())
    def race_created_and_canceled(self, data: st.DataObject) -> None:
        """Two account replicas handle order.created and order.canceled at once, each blind to the other."""
        order = self.orders[data.draw(st.sampled_from(self.racing_orders()))]
        self.inflight.remove(("order.created", order.id))
        self.inflight.remove(("order.canceled", order.id))
        created, canceled = (
            self.account_effect("order.created", order),
            self.account_effect("order.canceled", order),
        )
        self.store(created)
        if created.tombstone and canceled.tombstone:  # the unique key fails one; its retry sees the other
            canceled = self.account_effect("order.canceled", order)
        self.store(canceled)

    def racing_orders(self) -> list[uuid.UUID]:
        return [
            i
            for kind, i in self.inflight
            if kind == "order.created" and ("order.canceled", i) in self.inflight
        ]

    @precondition(lambda self: bool(self.inflight))
    @rule()
    def deliver_oldest(self) -> None:
        self.handle(*self.inflight.pop(0))

    def teardown(self) -> None:
        while self.inflight:
            self.handle(*self.inflight.pop(0))
        self.check_balances()
        for order in self.orders.values():
            self.check_settled(order)

    # --- handlers, as the services will run them ---

    def handle(self, kind: str, order_id: uuid.UUID) -> None:
        self.delivered.append((kind, order_id))
        order = self.orders[order_id]
        if kind == "funds.reserved":
            quote = self.quotes.get(order.asset_name)
            at_limit = self.mode is ExecutionMode.IMMEDIATE and order.price is not None
            self.send(order.reserve_funds_confirmed(self.mode, self.tick(), quote), at_limit=at_limit)
        elif kind == "funds.rejected":
            self.send(order.reserve_funds_rejected("rejected", self.tick()))
        else:
            self.store(self.account_effect(kind, order))

    def account_effect(self, kind: str, order: Order) -> Effect:
        """What the account does with `kind` for `order`, from the terms its event carries: order.created
        what to reserve, order.matched the executed price."""
        if kind == "order.matched":
            price = order.executed_price
        else:
            price = order.buy_price if order.side is Side.BUY else order.price
        terms = OrderTerms(order.id, order.customer_id, order.asset_name, order.side, order.size, price)
        held = next((r for r in self.reservations.values() if r.order_id == order.id), None)
        balances = {name: a for (c, name), a in self.assets.items() if c == order.customer_id}
        if kind == "order.created":
            return reserve_funds(
                terms, balances, reservation=held, tombstone=self.tombstones.get(order.id), now=self.clock
            )
        if kind == "order.matched":
            return settle(held, terms, balances)
        asset = balances.get(held.asset_name) if held else None
        tombstone = self.tombstones.get(order.id)
        return release_canceled_order(
            order.id, order.customer_id, reservation=held, tombstone=tombstone, asset=asset
        )

    def store(self, effect: Effect) -> None:
        assert effect.refused is None or effect.refused.problem is not Problem.INCONSISTENT, effect.refused
        for asset in effect.assets:
            known = self.assets.get((asset.customer_id, asset.asset_name))
            assert known is None or known.id == asset.id  # one balance per customer and asset
            self.assets[(asset.customer_id, asset.asset_name)] = asset
        if effect.reservation:
            self.reservations[effect.reservation.id] = effect.reservation
        if effect.tombstone:
            assert effect.tombstone.order_id not in self.tombstones
            self.tombstones[effect.tombstone.order_id] = effect.tombstone
        self.ledger.extend(effect.entries)
        self.send(effect.events)

    def send(self, events: Iterable[object], at_limit: bool = False) -> None:
        """Put the events on their way, and note what the market was when each was decided."""
        for event in events:
            if isinstance(event, OrderMatched):
                self.executions[event.order_id] = self.executions.get(event.order_id, 0) + 1
                self.executed_at[event.order_id] = None if at_limit else self.quotes.get(event.asset_name)
            elif isinstance(event, OrderCanceled) and not isinstance(event, ReleaseRequested):  # not a repeat
                self.check_market_reason(self.orders[event.order_id], event.reason)
        self.inflight.extend((e.event_type, e.order_id) for e in events)  # type: ignore[attr-defined]

    def send_if_applied(
        self, result: list[OrderEvent] | TransitionRefused | NotMarketable, at_limit: bool = False
    ) -> None:
        if isinstance(result, list):
            self.send(result, at_limit)

    def check_market_reason(self, order: Order, reason: str) -> None:
        """The market cancels an order only as its rules say: "expired" a DAY order at the close, "price
        moved beyond the collar" a MARKET BUY whose reservation the latest ask exceeds."""
        if reason == EXPIRED:
            assert self.closing and order.time_in_force is TimeInForce.DAY
        if reason == BEYOND_COLLAR:
            quote = self.quotes.get(order.asset_name)
            assert order.order_type is OrderType.MARKET and order.side is Side.BUY
            assert quote is not None and order.reserve_price is not None and quote.ask > order.reserve_price

    def pick_order(self, data: st.DataObject) -> Order | None:
        return data.draw(st.sampled_from(list(self.orders.values()))) if self.orders else None

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    # --- SPEC section 3 invariants ---

    @invariant()
    def check_balances(self) -> None:
        for (customer, name), asset in self.assets.items():
            assert D(0) <= asset.usable_size <= asset.total_size
            held = [
                r.amount
                for r in self.reservations.values()
                if self.owns(r, customer, name) and r.status is HELD
            ]
            assert asset.locked_size == sum_exact(held)
            entries = [e for e in self.ledger if (e.customer_id, e.asset_name) == (customer, name)]
            assert sum_exact(e.delta_total for e in entries) == asset.total_size
            assert sum_exact(e.delta_usable for e in entries) == asset.usable_size
            assert asset.total_size == self.expected_total(customer, name)

    def expected_total(self, customer: uuid.UUID, name: str) -> Decimal:
        """Conservation: approved deposits - paid withdrawals - what settled orders paid + what they
        received."""
        deposited = sum_exact(
            d.amount
            for d in self.deposits.values()
            if (d.customer_id, d.asset_name, d.status) == (customer, name, DepositStatus.APPROVED)
        )
        withdrawn = sum_exact(
            w.amount
            for w in self.withdrawals.values()
            if (w.customer_id, w.status, name) == (customer, WithdrawalStatus.PAID, CASH)
        )
        total = sub(deposited, withdrawn)
        for reservation in self.reservations.values():
            order = self.orders.get(reservation.order_id) if reservation.order_id else None
            if order is None or reservation.status is not SETTLED or order.customer_id != customer:
                continue
            paid, received = (CASH, order.asset_name) if order.side is Side.BUY else (order.asset_name, CASH)
            if name == paid:
                total = sub(total, order.cost if order.side is Side.BUY else order.size)
            elif name == received:
                total = add(total, order.size if order.side is Side.BUY else order.cost)
        return total

    @invariant()
    def check_executions(self) -> None:
        """Each order executes whole, at most once, at its limit or better: a BUY at most what it reserved per
        unit, a SELL at least its limit — at the quote that crossed it (a BUY at its ask, a SELL at its bid:
        the symbol's latest when it executed), or at its limit where the service executes at the limit (an
        `immediate` LIMIT order, a match where no market is known)."""
        for order in self.orders.values():
            assert self.executions.get(order.id, 0) == (order.status is MATCHED)
            price = order.executed_price
            assert (price is not None) == (order.status is MATCHED)
            if price is None:
                continue
            if order.side is Side.BUY:
                assert order.buy_price is not None and price <= order.buy_price
            else:
                assert order.price is None or price >= order.price
            quote = self.executed_at[order.id]
            if quote is None:
                assert price == order.price
            else:
                assert quote.crosses(order.side, order.price) and price == quote.price_for(order.side)

    @invariant()
    def check_orders_that_cannot_rest(self) -> None:
        """An IOC or MARKET order is decided once its funds are reserved: executed or canceled, never left
        PENDING (but in `manual` mode, where every order waits for an admin)."""
        if self.mode is ExecutionMode.MANUAL:
            return
        for order in self.orders.values():
            at_once = order.time_in_force is TimeInForce.IOC or order.order_type is OrderType.MARKET
            assert not (at_once and order.reserved and order.status is PENDING)

    @invariant()
    def check_price_improvement(self) -> None:
        """A settled BUY paid size × its executed price and got back the rest of what it reserved; a settled
        SELL delivered its size and was paid size × its executed price."""
        for reservation in self.reservations.values():
            order = self.orders.get(reservation.order_id) if reservation.order_id else None
            if order is None or reservation.status is not SETTLED:
                continue
            assert order.executed_price is not None
            entries = [e for e in self.ledger if e.order_id == order.id]
            debit = sum_exact(-e.delta_total for e in entries if e.kind is EntryKind.SETTLE_DEBIT)
            returned = sum_exact(e.delta_usable for e in entries if e.kind is EntryKind.RELEASE)
            credit = sum_exact(e.delta_total for e in entries if e.kind is EntryKind.SETTLE_CREDIT)
            paid = cost(order.size, order.executed_price)
            if order.side is Side.BUY:
                assert (debit, credit) == (paid, order.size)
                assert returned == sub(reservation.amount, paid)
            else:
                assert (debit, returned, credit) == (order.size, D(0), paid)

    @invariant()
    def check_holds(self) -> None:
        """Every hold belongs to an order or to a withdrawal, and every REQUESTED withdrawal's amount is held
        until it is decided: PAID from its hold, or the hold RELEASED."""
        for reservation in self.reservations.values():
            assert (reservation.order_id is None) != (reservation.withdrawal_id is None)
            if reservation.order_id is not None:
                assert reservation.order_id in self.orders
        for request in self.withdrawals.values():
            holds = [r for r in self.reservations.values() if r.withdrawal_id == request.id]
            assert [h.amount for h in holds] in ([], [request.amount])
            status = holds[0].status if holds else None
            assert (request.status, status) in {
                (WithdrawalStatus.REQUESTED, HELD),
                (WithdrawalStatus.PAID, SETTLED),
                (WithdrawalStatus.PAID, None),  # up to the threshold: paid at once
                (WithdrawalStatus.REJECTED, RELEASED),
            }
            assert (status is None) == (request.amount <= THRESHOLD)

    @invariant()
    def check_decisions(self) -> None:
        for request in [*self.deposits.values(), *self.withdrawals.values()]:
            assert (request.decided is None) == (request.status == "REQUESTED")
            if request.decided is None:
                continue
            assert request.decided.at >= request.requested.at
            if request.status in (DepositStatus.APPROVED, WithdrawalStatus.PAID):
                # Decided by the one who asked only when made at once: an admin's deposit, a small withdrawal.
                at_once = request.requested.by in ADMINS if isinstance(request, Deposit) else None
                at_once = request.amount <= THRESHOLD if at_once is None else at_once
                assert (request.decided.by == request.requested.by) == at_once
            credited = [e for e in self.ledger if e.reference == str(request.id)]
            if isinstance(request, Deposit):
                assert len(credited) == (request.status is DepositStatus.APPROVED)

    @staticmethod
    def owns(reservation: Reservation, customer: uuid.UUID, name: str) -> bool:
        return (reservation.customer_id, reservation.asset_name) == (customer, name)

    def check_settled(self, order: Order) -> None:
        """Once every event is delivered, each order agrees with the account."""
        held = [r for r in self.reservations.values() if r.order_id == order.id]
        assert len(held) <= 1
        status = held[0].status if held else None
        if order.status is MATCHED:
            assert status is SETTLED
        elif order.status is CANCELED:
            assert status in (None, RELEASED)
        else:  # waiting for an admin, or in `market` mode for a quote that crosses it
            assert self.mode is ExecutionMode.MANUAL or (self.mode is ExecutionMode.MARKET and order.rests)
            assert order.reserved and status is HELD


def sum_exact(values: Iterable[Decimal]) -> Decimal:
    total = D(0)
    for value in values:
        total = add(total, value)
    return total


Lifecycle.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
test_lifecycle_any_interleaving_keeps_spec_invariants = Lifecycle.TestCase


class MarketLifecycle(Lifecycle):
    """The same, in `market` mode with funded customers only: quotes crossing resting orders, MARKET, IOC
    and DAY orders, the collar and price improvement — the paths the mixed machine reaches least."""

    @initialize()
    def start(self) -> None:  # type: ignore[override]
        self.begin(ExecutionMode.MARKET, funded=True)


MarketLifecycle.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
test_market_lifecycle_keeps_spec_invariants = MarketLifecycle.TestCase


def test_lifecycle_reservation_racing_cancel_released_on_request() -> None:
    """Two account replicas: one reserves for order.created while the other, not seeing it yet, handles
    order.canceled and leaves a tombstone. The order service answers the late funds.reserved with a release
    request, and the money comes back."""
    placed = place_order(PlaceOrder(CUSTOMER, "AAPL", Side.BUY, D(10), D("2.5")), T_START)
    assert isinstance(placed, OrderPlaced)
    order, cash = placed.order, balance(CASH, "100")
    terms = OrderTerms(order.id, CUSTOMER, "AAPL", Side.BUY, order.size, order.price)
    order.cancel("canceled by customer", T_START)
    reserved = reserve_funds(terms, by_name(cash), now=T_START)
    tombstoned = release_canceled_order(order.id, CUSTOMER, reservation=None, tombstone=None, asset=None)
    assert reserved.reservation is not None and tombstoned.tombstone is not None

    (request,) = order.reserve_funds_confirmed(ExecutionMode.IMMEDIATE, T_START)
    assert isinstance(request, ReleaseRequested)
    effect = release_canceled_order(
        order.id,
        CUSTOMER,
        reservation=reserved.reservation,
        tombstone=tombstoned.tombstone,
        asset=changed(reserved, CASH),
    )
    assert sizes(changed(effect, CASH)) == (D(100), D(100))
    assert order.status is CANCELED
