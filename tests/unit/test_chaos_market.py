"""The market checks of the chaos suite and of `oms audit`, each fed a history that breaks its rule: an
execution at a price nobody quoted, a BUY's price improvement kept by the account, an IOC order resting, a
DAY order expired before any close or outliving one, a collar that never moved."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from oms.account.domain import EntryKind, LedgerEntry, Reservation
from oms.chaos.market import QuoteHistory, closes_in, limit_price
from oms.chaos.verify import Rules, Verdict, check_executions, check_settlements, settlement_problem
from oms.kernel.market import Instrument, Quote
from oms.kernel.money import CASH, OrderType, Side, TimeInForce
from oms.kernel.settings import ExecutionMode, MarketClose, Settings
from oms.order.domain import BEYOND_COLLAR, EXPIRED, NOT_MARKETABLE, Order, OrderStatus
from oms.runtime.audit import MarketRules, market_problems, reservation_problem

D = Decimal
T0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
CLOSE = MarketClose.parse("12:00 UTC")  # T0 + 2 h
MARKET_RULES = MarketRules(ExecutionMode.MARKET, CLOSE)
CUSTOMER = uuid.uuid4()


def quote(sequence: int, bid: str, ask: str, at: datetime, symbol: str = "AAPL") -> Quote:
    return Quote(symbol=symbol, bid=D(bid), ask=D(ask), last=D(bid), time=at, sequence=sequence)


def order(
    side: Side = Side.BUY,
    *,
    price: str | None = "100.05",
    status: OrderStatus = OrderStatus.MATCHED,
    executed: str | None = None,
    order_type: OrderType = OrderType.LIMIT,
    tif: TimeInForce = TimeInForce.GTC,
    at: datetime = T0 + timedelta(seconds=10),
    reason: str | None = None,
    reserve_price: str | None = None,
    size: str = "3",
) -> Order:
    return Order(
        id=uuid.uuid4(),
        customer_id=CUSTOMER,
        asset_name="AAPL",
        side=side,
        size=D(size),
        price=D(price) if price else None,
        created_at=T0,
        updated_at=at,
        status=status,
        reason=reason,
        reserved=True,
        order_type=order_type,
        time_in_force=tif,
        reserve_price=D(reserve_price) if reserve_price else None,
        executed_price=D(executed) if executed else None,
    )


# The market quoted AAPL three times; sequence 3's ask 100.04 came only after T0 + 20 s.
HISTORY = QuoteHistory(
    [
        quote(1, "99.98", "100.01", T0),
        quote(2, "99.99", "100.02", T0 + timedelta(seconds=5)),
        quote(3, "100.02", "100.04", T0 + timedelta(seconds=20)),
    ]
)
RULES = Rules(ExecutionMode.MARKET, CLOSE, HISTORY)


def executions(*orders: Order, rules: Rules = RULES) -> Verdict:
    verdict = Verdict()
    check_executions({str(o.id): o for o in orders}, rules, verdict)
    return verdict


# --- executions at a quoted price -------------------------------------------------------------------------


def test_executions_at_quoted_prices_pass() -> None:
    verdict = executions(
        order(Side.BUY, executed="100.02"),  # sequence 2's ask
        order(Side.SELL, price="99.95", executed="99.98"),  # sequence 1's bid
        order(Side.BUY, price=None, order_type=OrderType.MARKET, executed="100.01", reserve_price="100.06"),
    )
    assert verdict.violations == []
    assert verdict.figures == {"executions_unverifiable": 0, "buys_below_their_reservation": 2}


def test_an_execution_at_a_price_nobody_quoted_is_flagged() -> None:
    verdict = executions(order(Side.BUY, executed="100.03"))
    assert len(verdict.violations) == 1
    assert "executed at 100.03, which the market never quoted as an ask" in verdict.violations[0]


def test_a_buy_executed_at_the_bid_is_flagged() -> None:
    """99.99 was quoted, as a bid: a BUY pays the ask."""
    assert len(executions(order(Side.BUY, executed="99.99")).violations) == 1


def test_an_execution_at_a_quote_that_came_later_is_flagged() -> None:
    """100.04 was asked at T0 + 20 s: an execution at T0 + 10 s cannot have met it."""
    assert len(executions(order(Side.BUY, price="100.05", executed="100.04")).violations) == 1
    late = order(Side.BUY, price="100.05", executed="100.04", at=T0 + timedelta(seconds=21))
    assert executions(late).violations == []


def test_a_gap_in_the_record_makes_an_unconfirmed_execution_unverifiable_not_a_violation() -> None:
    gappy = QuoteHistory([quote(1, "99.98", "100.01", T0), quote(3, "100.02", "100.04", T0)])
    verdict = executions(order(Side.BUY, executed="100.03"), rules=Rules(ExecutionMode.MARKET, CLOSE, gappy))
    assert verdict.violations == [] and verdict.figures["executions_unverifiable"] == 1


def test_immediate_mode_executes_a_limit_order_at_its_limit_only() -> None:
    rules = Rules(ExecutionMode.IMMEDIATE, CLOSE, HISTORY)
    assert executions(order(Side.BUY, executed="100.05"), rules=rules).violations == []
    flagged = executions(order(Side.BUY, executed="100.02"), rules=rules).violations
    assert flagged and "not at its limit 100.05" in flagged[0]


def test_a_collar_cancel_needs_an_ask_beyond_the_reservation() -> None:
    def collared(reserve: str) -> Order:
        return order(
            Side.BUY, price=None, order_type=OrderType.MARKET, status=OrderStatus.CANCELED,
            reason=BEYOND_COLLAR, reserve_price=reserve, at=T0 + timedelta(seconds=30),
        )  # fmt: skip

    assert executions(collared("100.03")).violations == []  # 100.04 was asked
    flagged = executions(collared("100.04")).violations
    assert flagged and "no ask above its 100.04" in flagged[0]


def test_quote_history_counts_the_gaps_per_symbol() -> None:
    history = QuoteHistory([quote(s, "1.00", "1.01", T0, "X") for s in (4, 5, 8)] + [quote(1, "2", "3", T0)])
    assert (history.gaps("X"), history.gaps("AAPL"), history.gaps("NONE")) == (2, 0, 0)
    assert history.symbols() == ["AAPL", "X"]


# --- settlement at the executed price, price improvement given back --------------------------------------


def entries(o: Order, **amounts: str) -> list[LedgerEntry]:
    """The order's ledger entries, amounts by kind (RESERVE's counted on usable, the others on total)."""
    made = []
    for kind, amount in amounts.items():
        delta = D(amount) if kind in ("SETTLE_CREDIT", "RELEASE") else -D(amount)
        total, usable = (D(0), delta) if kind in ("RESERVE", "RELEASE") else (delta, delta)
        made.append(LedgerEntry(EntryKind(kind), CUSTOMER, CASH, total, usable, o.id))
    return made


def test_a_buy_below_its_limit_settles_at_its_price_and_gets_the_rest_back() -> None:
    buy = order(Side.BUY, executed="100.02")  # reserved 3 × 100.05 = 300.15, paid 300.06
    good = entries(buy, RESERVE="300.15", SETTLE_DEBIT="300.06", RELEASE="0.09", SETTLE_CREDIT="3")
    assert settlement_problem(buy, good) is None


def test_a_price_improvement_the_account_kept_is_flagged() -> None:
    buy = order(Side.BUY, executed="100.02")
    kept = entries(buy, RESERVE="300.15", SETTLE_DEBIT="300.06", SETTLE_CREDIT="3")
    verdict = Verdict()
    check_settlements({str(buy.id): buy}, kept, verdict)
    assert len(verdict.violations) == 1 and "'RELEASE': '0.09'" in verdict.violations[0]


def test_a_settlement_at_the_limit_instead_of_the_executed_price_is_flagged() -> None:
    buy = order(Side.BUY, executed="100.02")
    at_limit = entries(buy, RESERVE="300.15", SETTLE_DEBIT="300.15", SETTLE_CREDIT="3")
    assert settlement_problem(buy, at_limit) is not None
    sell = order(Side.SELL, price="99.95", executed="99.98")
    assert (
        settlement_problem(sell, entries(sell, RESERVE="3", SETTLE_DEBIT="3", SETTLE_CREDIT="299.94")) is None
    )
    underpaid = entries(sell, RESERVE="3", SETTLE_DEBIT="3", SETTLE_CREDIT="299.85")
    assert settlement_problem(sell, underpaid) is not None


def test_a_reservation_other_than_the_terms_is_flagged_by_the_audit() -> None:
    buy = order(
        Side.BUY, price=None, order_type=OrderType.MARKET, reserve_price="100.06", status=OrderStatus.PENDING
    )
    held = Reservation(uuid.uuid4(), buy.id, CUSTOMER, CASH, D("300.18"))
    assert reservation_problem(buy, held) is None
    short = Reservation(uuid.uuid4(), buy.id, CUSTOMER, CASH, D("300.06"))  # at the ask, no collar
    assert reservation_problem(buy, short) == "reserved 300.06 TRY, but its terms reserve 300.18 TRY"
    sell = order(Side.SELL, status=OrderStatus.PENDING)
    assert reservation_problem(sell, Reservation(uuid.uuid4(), sell.id, CUSTOMER, "AAPL", D(3))) is None
    assert reservation_problem(sell, Reservation(uuid.uuid4(), sell.id, CUSTOMER, CASH, D(3))) is not None


# --- the market's reasons, IOC and DAY, as `oms audit` checks them ----------------------------------------

NOW = T0 + timedelta(hours=1)


def problems(o: Order, rules: MarketRules = MARKET_RULES, now: datetime = NOW) -> list[str]:
    return market_problems(o, rules, now)


def test_orders_that_keep_the_market_rules_pass() -> None:
    canceled = OrderStatus.CANCELED
    after_close = T0 + timedelta(hours=2, seconds=1)
    fine = [
        order(status=canceled, reason=NOT_MARKETABLE, tif=TimeInForce.IOC),
        order(price=None, order_type=OrderType.MARKET, status=canceled, reason=NOT_MARKETABLE),
        order(
            price=None,
            order_type=OrderType.MARKET,
            status=canceled,
            reason=BEYOND_COLLAR,
            reserve_price="101",
        ),
        order(tif=TimeInForce.DAY, status=canceled, reason=EXPIRED, at=after_close),
        order(tif=TimeInForce.DAY, executed="100.02"),
        order(tif=TimeInForce.DAY, status=OrderStatus.PENDING),
    ]
    assert [problems(o) for o in fine] == [[]] * len(fine)


def test_not_marketable_for_a_resting_limit_order_is_flagged() -> None:
    assert problems(order(status=OrderStatus.CANCELED, reason=NOT_MARKETABLE)) == [
        "canceled 'not marketable', but it is a reserved IOC or MARKET order only"
    ]


def test_a_collar_cancel_of_a_sell_or_a_limit_buy_is_flagged() -> None:
    sell = order(
        Side.SELL, price=None, order_type=OrderType.MARKET, status=OrderStatus.CANCELED, reason=BEYOND_COLLAR
    )
    limit_buy = order(status=OrderStatus.CANCELED, reason=BEYOND_COLLAR)
    assert len(problems(sell)) == len(problems(limit_buy)) == 1


def test_expired_before_any_close_or_not_a_day_order_is_flagged() -> None:
    early = order(
        tif=TimeInForce.DAY, status=OrderStatus.CANCELED, reason=EXPIRED, at=T0 + timedelta(minutes=5)
    )
    gtc = order(status=OrderStatus.CANCELED, reason=EXPIRED, at=T0 + timedelta(hours=3))
    assert (
        problems(early)
        == problems(gtc)
        == ["canceled 'expired', but it is not a DAY order placed before a close"]
    )


def test_a_day_order_that_outlives_its_close_is_flagged() -> None:
    executed_after = order(tif=TimeInForce.DAY, executed="100.02", at=T0 + timedelta(hours=2, minutes=1))
    canceled_after = order(
        tif=TimeInForce.DAY,
        status=OrderStatus.CANCELED,
        reason="canceled by customer",
        at=T0 + timedelta(hours=3),
    )
    still_pending = order(tif=TimeInForce.DAY, status=OrderStatus.PENDING)
    later = T0 + timedelta(hours=2, minutes=5)
    assert len(problems(executed_after)) == len(problems(canceled_after)) == 1
    assert len(problems(still_pending, now=later)) == 1
    assert "is MATCHED after it" in problems(executed_after)[0]
    just_after = order(tif=TimeInForce.DAY, executed="100.02", at=T0 + timedelta(hours=2, seconds=5))
    assert problems(just_after) == []  # within the grace the close takes
    immediate = MarketRules(ExecutionMode.IMMEDIATE, CLOSE)  # no close there: a DAY order executes at once
    assert problems(executed_after, immediate) == []


@pytest.mark.parametrize("mode", list(ExecutionMode))
def test_an_ioc_or_market_order_resting_once_reserved_is_flagged_but_in_manual_mode(
    mode: ExecutionMode,
) -> None:
    ioc = order(tif=TimeInForce.IOC, status=OrderStatus.PENDING)
    market = order(price=None, order_type=OrderType.MARKET, status=OrderStatus.PENDING)
    rules = MarketRules(mode, CLOSE)
    flagged = [problems(o, rules) for o in (ioc, market)]
    if mode is ExecutionMode.MANUAL:
        assert flagged == [[], []]
    else:
        assert flagged == [
            ["a LIMIT IOC order rests PENDING once reserved"],
            ["a MARKET GTC order rests PENDING once reserved"],
        ]


# --- pricing the workload's orders ------------------------------------------------------------------------


def test_limits_cross_or_rest_by_ticks_inside_the_band() -> None:
    aapl = Instrument(symbol="AAPL", name="Apple", tick_size=D("0.01"), lot_size=D(1), reference_price=D(100))
    now = quote(1, "99.98", "100.01", T0)
    assert limit_price(aapl, now, Side.BUY, 2, marketable=True) == D("100.03")
    assert limit_price(aapl, now, Side.SELL, 2, marketable=True) == D("99.96")
    assert limit_price(aapl, now, Side.BUY, 2, marketable=False) == D("99.96")
    assert limit_price(aapl, now, Side.SELL, 2, marketable=False) == D("100.03")
    assert limit_price(aapl, now, Side.BUY, 5000, marketable=True) == D(
        "109.97"
    )  # 10 % above the last, 99.98
    assert limit_price(aapl, now, Side.SELL, 5000, marketable=True) == D("89.99")


def test_the_close_falls_inside_the_run() -> None:
    text = closes_in(90, datetime(2026, 12, 6, 23, 59, tzinfo=UTC))
    assert text == "00:00:30 UTC"
    close = MarketClose.parse(text)
    assert close.next(datetime(2026, 12, 6, 23, 59, tzinfo=UTC)) == datetime(
        2026, 12, 7, 0, 0, 30, tzinfo=UTC
    )


def test_oms_audit_judges_by_the_rules_the_running_system_was_started_with(tmp_path: Path) -> None:
    """`oms up --execution manual` in one shell, `oms audit` in another: the audit reads the mode and close
    from the system's state file, not from its own environment (an IOC order waiting for an admin is fine)."""
    settings = Settings(data_dir=tmp_path, execution="market")
    assert MarketRules.of_running(settings) == MarketRules(ExecutionMode.MARKET, settings.close())
    (tmp_path / "run").mkdir()
    state = {"pid": 1, "execution": "manual", "market_close": "17:30 UTC"}
    (tmp_path / "run" / "state.json").write_text(json.dumps(state))
    rules = MarketRules.of_running(settings)
    assert rules == MarketRules(ExecutionMode.MANUAL, MarketClose.parse("17:30 UTC"))
    assert problems(order(tif=TimeInForce.IOC, status=OrderStatus.PENDING), rules) == []
