"""Execution at market prices (SPEC §3b, `market` mode), one rule per test, on the running flow (order and
account services, relays, NATS, PostgreSQL) with quotes published to the order service's board in a fixed
sequence. Each test lists a symbol of its own, so that no other test's orders meet its quotes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest

from oms.kernel.db import create_pool
from oms.kernel.market import InstrumentStatus
from oms.kernel.settings import Settings
from oms.kernel.unit_of_work import postgres_unit_of_work
from oms.order.handlers import cancel, change_order
from oms.order.store import CHANGES_CHANNEL, Orders
from oms.order.stream import StreamsOpen
from oms.runtime.nats import EmbeddedNats
from tests.conftest import execute
from tests.integration.market_system import MarketSystem, running

D = Decimal
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
async def system(
    make_database: Callable[[str], str], nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MarketSystem]:
    async with running(make_database, nats_server, tmp_path_factory.mktemp("market")) as running_system:
        yield running_system


def ledger_kinds(system: MarketSystem, order_id: str) -> list[str]:
    rows = execute(
        system.databases["account"], f"SELECT kind FROM ledger WHERE order_id = '{order_id}' ORDER BY seq"
    )
    return [str(row[0]) for row in rows]


# --- Placing: what the market does not take -----------------------------------------------------------------


async def test_place_unknown_symbol_422(system: MarketSystem) -> None:
    customer = await system.customer("1000")
    answer = await system.place(customer, assetName="ZZZ", price="1")
    assert (answer.status_code, answer.json()["error"]) == (
        422,
        "unknown symbol ZZZ: not a listed instrument",
    )


async def test_place_halted_symbol_409(system: MarketSystem) -> None:
    symbol = system.listed(halted=True)
    answer = await system.place(await system.customer("10000"), assetName=symbol, price="300")
    assert answer.status_code == 409 and "HALTED" in answer.json()["error"]


@pytest.mark.parametrize(
    ("terms", "problem"),
    [
        ({"price": "300.01"}, "multiple of the tick size 0.05"),
        ({"price": "400"}, "outside the price band"),
        ({"size": "2.5", "price": "300"}, "multiple of the lot size 1"),
        ({"orderType": "MARKET", "price": "300"}, "a MARKET order has no price"),
        ({}, "a LIMIT order needs a price"),
        ({"timeInForce": "FOK", "price": "300"}, "invalid request"),
    ],
)
async def test_place_against_the_instruments_rules_422(
    system: MarketSystem, terms: dict[str, str], problem: str
) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05", last="300")
    answer = await system.place(await system.customer("100000"), assetName=symbol, **terms)
    assert answer.status_code == 422
    assert problem in answer.json()["error"], answer.json()


async def test_place_market_order_before_any_quote_409(system: MarketSystem) -> None:
    symbol = system.listed()
    answer = await system.place(await system.customer("100000"), assetName=symbol, orderType="MARKET")
    assert answer.status_code == 409
    assert answer.json()["error"] == f"no quote for {symbol} yet: a MARKET order needs the market's price"


async def test_refused_order_changes_nothing(system: MarketSystem) -> None:
    customer = await system.customer("1000")
    await system.place(customer, assetName="ZZZ", price="1")
    listed = await system.http.get(
        f"{system.urls['order']}/api/v1/orders", params={"customerId": customer.id}, headers=customer.headers
    )
    assert listed.json()["orders"] == []
    assert await system.balances(customer) == {"TRY": (D(1000), D(1000))}


# --- The attack of issue 12 ---------------------------------------------------------------------------------


async def test_attack_buy_at_a_millionth_and_sell_at_ten_to_the_twentieth_refused(
    system: MarketSystem,
) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05", last="300")
    mallory = await system.customer("1", **{symbol: "1000000"})
    buy = await system.place(mallory, assetName=symbol, size="1000000", price="0.000001")
    sell = await system.place(
        mallory, assetName=symbol, orderSide="SELL", size="1000000", price="99999999999999999999"
    )
    assert (buy.status_code, sell.status_code) == (422, 422)
    assert await system.balances(mallory) == {"TRY": (D(1), D(1)), symbol: (D(1000000), D(1000000))}


async def test_attack_marketable_buy_executes_at_the_ask_and_the_difference_comes_back(
    system: MarketSystem,
) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05", last="300")
    customer = await system.customer("10000")
    order_id = await system.placed(customer, assetName=symbol, price="320")  # reserves 3,200
    order = await system.settled(order_id, "MATCHED")
    assert (order["executedPrice"], order["price"]) == (300.05, 320)
    assert await system.balances(customer) == {"TRY": (D("6999.5"), D("6999.5")), symbol: (D(10), D(10))}
    assert ledger_kinds(system, order_id) == ["RESERVE", "SETTLE_DEBIT", "RELEASE", "SETTLE_CREDIT"]
    assert (await system.audit()).violations == []


# --- Marketable at once -------------------------------------------------------------------------------------


async def test_marketable_sell_executes_at_the_bid(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("0", **{symbol: "10"})
    order = await system.settled(
        await system.placed(customer, assetName=symbol, orderSide="SELL", price="290"), "MATCHED"
    )
    assert order["executedPrice"] == 299.95
    assert await system.balances(customer) == {"TRY": (D("2999.5"), D("2999.5")), symbol: (D(0), D(0))}


async def test_market_buy_reserves_the_collar_and_pays_the_ask(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("3200")  # 10 × 315.10 (the ask plus 5 %, on the tick grid) = 3,151
    order = await system.settled(
        await system.placed(customer, assetName=symbol, orderType="MARKET"), "MATCHED"
    )
    assert (order["executedPrice"], order["price"], order["orderType"]) == (300.05, None, "MARKET")
    assert await system.balances(customer) == {"TRY": (D("199.5"), D("199.5")), symbol: (D(10), D(10))}


async def test_market_buy_without_the_collars_money_rejected(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("3100")  # enough at the ask, not with the collar
    order = await system.settled(
        await system.placed(customer, assetName=symbol, orderType="MARKET"), "CANCELED"
    )
    assert order["reason"] == "insufficient usable TRY: 3151 needed, 3100 usable"


async def test_market_buy_the_ask_moved_beyond_the_collar_canceled_and_released(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("5000")
    async with system.relay_paused("order"):  # the order waits in the outbox while the market moves
        order_id = await system.placed(customer, assetName=symbol, orderType="MARKET")
        await system.quote(symbol, "315.10", "315.15")
    order = await system.settled(order_id, "CANCELED")
    assert (order["reason"], order["executedPrice"]) == ("price moved beyond the collar", None)
    assert await system.balances(customer) == {"TRY": (D(5000), D(5000))}


async def test_ioc_not_marketable_canceled_and_released(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("5000")
    order_id = await system.placed(customer, assetName=symbol, price="300", timeInForce="IOC")
    order = await system.settled(order_id, "CANCELED")
    assert order["reason"] == "not marketable"
    assert await system.balances(customer) == {"TRY": (D(5000), D(5000))}
    assert ledger_kinds(system, order_id) == ["RESERVE", "RELEASE"]


async def test_ioc_marketable_executed(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("0", **{symbol: "10"})
    order_id = await system.placed(
        customer, assetName=symbol, orderSide="SELL", price="299.95", timeInForce="IOC"
    )
    assert (await system.settled(order_id, "MATCHED"))["executedPrice"] == 299.95


# --- Resting until a quote crosses it -----------------------------------------------------------------------


async def test_resting_buy_executes_at_the_quote_that_crosses_it(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("3000")
    order_id = await system.placed(customer, assetName=symbol, price="299")
    await system.resting(order_id)
    assert await system.balances(customer) == {"TRY": (D(3000), D(10))}
    await system.quote(symbol, "299.00", "299.10")  # not yet: the ask is above 299
    await system.quote(symbol, "298.80", "298.90")
    order = await system.settled(order_id, "MATCHED")
    assert order["executedPrice"] == 298.9
    assert await system.balances(customer) == {"TRY": (D(11), D(11)), symbol: (D(10), D(10))}


async def test_resting_sell_executes_at_the_bid_that_crosses_it(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("0", **{symbol: "10"})
    order_id = await system.placed(customer, assetName=symbol, orderSide="SELL", price="301")
    await system.resting(order_id)
    await system.quote(symbol, "301.50", "301.60")
    assert (await system.settled(order_id, "MATCHED"))["executedPrice"] == 301.5


async def test_quote_seen_twice_executes_nothing_twice(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("3000")
    order_id = await system.placed(customer, assetName=symbol, price="299")
    await system.resting(order_id)
    crossing = await system.quote(symbol, "298.80", "298.90")
    assert not await system.board.publish(crossing)  # delivered again: the board knows it
    await system.quote(symbol, "297.80", "297.90")  # a newer quote crossing it too
    order = await system.settled(order_id, "MATCHED")
    assert order["executedPrice"] == 298.9
    assert ledger_kinds(system, order_id) == ["RESERVE", "SETTLE_DEBIT", "RELEASE", "SETTLE_CREDIT"]


async def test_canceled_resting_order_is_not_executed_by_a_later_quote(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("6000")
    order_id, sentinel = [await system.placed(customer, assetName=symbol, price="299") for _ in range(2)]
    await system.resting(order_id)
    await system.resting(sentinel)
    answer = await system.http.delete(
        f"{system.urls['order']}/api/v1/orders", params={"orderId": order_id}, headers=customer.headers
    )
    assert answer.status_code == 200
    await system.quote(symbol, "298.80", "298.90")  # crosses both: only the sentinel is still PENDING
    await system.settled(sentinel, "MATCHED")
    assert (await system.settled(order_id, "CANCELED"))["executedPrice"] is None
    assert ledger_kinds(system, order_id) == ["RESERVE", "RELEASE"]


async def test_resting_orders_are_executed_best_limit_first_each_at_the_quote(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("100000")
    ids = [
        await system.placed(customer, assetName=symbol, price=price) for price in ("299", "298", "297", "296")
    ]
    for order_id in ids:
        await system.resting(order_id)
    await system.quote(symbol, "297.40", "297.50")  # crosses the BUYs at 299 and 298 only
    executed = [await system.settled(i, "MATCHED") for i in ids[:2]]
    assert [o["executedPrice"] for o in executed] == [297.5, 297.5]
    assert [(await system.order(i))["status"] for i in ids[2:]] == ["PENDING", "PENDING"]
    for order_id in ids[2:]:
        await system.http.delete(
            f"{system.urls['order']}/api/v1/orders", params={"orderId": order_id}, headers=customer.headers
        )
    assert (await system.audit()).violations == []


async def test_halted_instruments_resting_orders_wait_for_it_to_reopen(system: MarketSystem) -> None:
    symbol, other = system.listed(), system.listed()
    await system.quote(symbol, "299.95", "300.05")
    await system.quote(other, "299.95", "300.05")
    customer = await system.customer("6000")
    order_id = await system.placed(customer, assetName=symbol, price="299")
    sentinel = await system.placed(customer, assetName=other, price="299")
    await system.resting(order_id)
    await system.resting(sentinel)
    instrument = system.board.instrument(symbol)
    assert instrument is not None
    system.board.list_instrument(instrument.model_copy(update={"status": InstrumentStatus.HALTED}))
    await system.quote(symbol, "298.80", "298.90")  # a stray quote of a halted symbol executes nothing
    await system.quote(other, "298.80", "298.90")
    await system.settled(sentinel, "MATCHED")
    assert (await system.order(order_id))["status"] == "PENDING"
    system.board.list_instrument(instrument)
    await system.quote(symbol, "298.70", "298.80")
    assert (await system.settled(order_id, "MATCHED"))["executedPrice"] == 298.8


# --- Restart and the close ----------------------------------------------------------------------------------


async def test_restarted_service_resumes_from_the_latest_quote(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("3000")
    order_id = await system.placed(customer, assetName=symbol, price="299")
    await system.resting(order_id)
    await system.stop_order_service()
    await system.quote(symbol, "298.80", "298.90")  # while it is down
    await system.start_order_service()
    order = await system.settled(order_id, "MATCHED")
    assert order["executedPrice"] == 298.9


async def test_day_order_pending_at_the_close_expires_and_gtc_stays(
    system: MarketSystem, tmp_path: Path
) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("10000")
    day = await system.placed(customer, assetName=symbol, price="299", timeInForce="DAY")
    gtc = await system.placed(customer, assetName=symbol, price="299")
    await system.resting(day)
    await system.resting(gtc)
    close = Settings().close()
    now = system.clock()
    system.clock.offset += close.next(now) - now - timedelta(seconds=0.5)  # half a second before the close
    try:
        order = await system.settled(day, "CANCELED", within=10)
    finally:
        system.clock.offset = timedelta()
    assert order["reason"] == "expired"
    assert (await system.order(gtc))["status"] == "PENDING"
    assert await system.balances(customer) == {"TRY": (D(10000), D(7010))}


# --- The order stream ---------------------------------------------------------------------------------------


def is_order(order_id: str, status: str, reserved: bool = True) -> Callable[[dict[str, object]], bool]:
    return lambda o: o["id"] == order_id and o["status"] == status and o["fundsReserved"] is reserved


async def test_stream_shows_a_customers_order_change_live_and_no_one_elses(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    alice, bob = await system.customer("3000"), await system.customer("3000")
    async with system.order_stream(alice) as stream, system.order_stream(bob) as bobs:
        order_id = await system.placed(alice, assetName=symbol, price="299")
        # Each event is the order as it is when read: its first may already show the funds reserved.
        first = await stream.until(lambda o: o["id"] == order_id)
        assert first["status"] == "PENDING"
        await stream.until(is_order(order_id, "PENDING"))
        await system.quote(symbol, "298.80", "298.90")
        matched = await stream.until(is_order(order_id, "MATCHED"))
        assert matched["executedPrice"] == 298.9
        sentinel = await system.placed(bob, assetName=symbol, price="290")
        await bobs.until(lambda o: o["id"] == sentinel)
    assert {o["customerId"] for o in bobs.seen} == {bob.id}


async def test_stream_admin_sees_every_customers_orders(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("4000")
    async with system.order_stream(system.admin) as stream:
        order_id = await system.placed(customer, assetName=symbol, price="310")
        await stream.until(is_order(order_id, "MATCHED"))


async def test_stream_customer_asking_for_another_customers_orders_403(system: MarketSystem) -> None:
    alice, bob = await system.customer(), await system.customer()
    url = f"{system.urls['order']}/api/v1/orders/stream"
    answer = await system.http.get(url, params={"customerId": bob.id}, headers=alice.headers)
    assert answer.status_code == 403


async def test_stream_a_change_written_by_another_replica_reaches_it(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("3000")
    order_id = await system.placed(customer, assetName=symbol, price="299")
    await system.resting(order_id)
    pool = await create_pool(system.databases["order"], min_size=1, max_size=2)  # another replica's
    streams, stop = StreamsOpen(), asyncio.Event()
    following = asyncio.create_task(streams.run(pool, stop))
    replica = postgres_unit_of_work(pool, lambda conn, stage: Orders(conn, stage, streams))
    try:
        async with system.order_stream(customer) as stream:
            await stream.until(is_order(order_id, "PENDING"))  # the snapshot
            assert streams()  # the other replica knows a stream is open: it notifies its changes
            assert await change_order(replica, uuid.UUID(order_id), cancel("by replica 2")) is not None
            canceled = await stream.until(is_order(order_id, "CANCELED"))
        assert canceled["reason"] == "by replica 2"
    finally:
        stop.set()
        await following
        await pool.close()


async def test_stream_none_open_no_change_is_notified(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("6000")
    listener = await asyncpg.connect(system.databases["order"])
    notified: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CHANGES_CHANNEL, lambda *args: notified.put_nowait(args[3]))
    try:
        unwatched = await system.placed(customer, assetName=symbol, price="299")
        await system.resting(unwatched)
        async with system.order_stream(customer) as stream:
            watched = await system.placed(customer, assetName=symbol, price="298")
            await stream.until(lambda o: o["id"] == watched)
        first = await asyncio.wait_for(notified.get(), 10)
        assert unwatched not in first and watched in first  # notifications come in commit order
    finally:
        await listener.close()


async def test_stream_after_a_restart_starts_from_the_orders_as_they_are(system: MarketSystem) -> None:
    symbol = system.listed()
    await system.quote(symbol, "299.95", "300.05")
    customer = await system.customer("3000")
    order_id = await system.placed(customer, assetName=symbol, price="299")
    async with system.order_stream(customer) as stream:
        await stream.until(is_order(order_id, "PENDING"))
        await system.stop_order_service()  # the stream ends with its service
        await system.quote(symbol, "298.80", "298.90")
        with pytest.raises((httpx.HTTPError, AssertionError)):
            await stream.until(lambda o: False)
    await system.start_order_service()
    await system.settled(order_id, "MATCHED")
    async with system.order_stream(customer) as again:
        snapshot = await again.until(lambda o: o["id"] == order_id)
    assert (snapshot["status"], snapshot["executedPrice"]) == ("MATCHED", 298.9)
