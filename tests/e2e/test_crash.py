"""Crashes in the middle of a stream of orders at the market's prices: a relay or a service killed with
SIGKILL while 1,000 orders flow, restarted by the supervisor. Every order must still reach its final
status, once; balances must agree exactly with the MATCHED orders; every reservation and settlement must be
booked once; `oms audit` must be clean.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.api import CENT, Api, User, is_terminal
from tests.e2e.conftest import RunningSystem

pytestmark = [pytest.mark.e2e, pytest.mark.long]

CUSTOMERS = 20
ORDERS = 1000
ASSETS = ("AAPL", "MSFT")
START_TRY = Decimal(2000)
START_STOCK = Decimal(20)

RELAY_ORDER = ("serve", "relay", "--service", "order")
RELAY_ACCOUNT = ("serve", "relay", "--service", "account")
ACCOUNT = ("serve", "account")
ORDER = ("serve", "order")
MARKET = ("serve", "market")


@pytest.fixture(scope="module")
def api(system: RunningSystem) -> Iterator[Api]:
    yield Api(system)


# --- processes of the running system ------------------------------------------------------------------------


def component(system: RunningSystem, argv_tail: tuple[str, ...]) -> psutil.Process | None:
    """The live child of `oms up` whose command line ends with `argv_tail`, if one runs now."""
    assert system.process is not None
    for child in psutil.Process(system.process.pid).children(recursive=True):
        try:
            if (
                tuple(child.cmdline()[-len(argv_tail) :]) == argv_tail
                and child.status() != psutil.STATUS_ZOMBIE
            ):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def kill(system: RunningSystem, argv_tail: tuple[str, ...]) -> int:
    """SIGKILL the component; returns its pid."""
    process = component(system, argv_tail)
    assert process is not None, f"no {' '.join(argv_tail)} running"
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    return process.pid


def wait_restarted(
    system: RunningSystem, argv_tail: tuple[str, ...], old_pid: int, timeout: float = 30
) -> int:
    deadline = time.monotonic() + timeout
    while True:
        process = component(system, argv_tail)
        if process is not None and process.pid != old_pid:
            return process.pid
        if time.monotonic() > deadline:
            pytest.fail(f"{' '.join(argv_tail)} was not restarted:\n" + "".join(system.output[-20:]))
        time.sleep(0.1)


def healthy(system: RunningSystem, argv_tail: tuple[str, ...]) -> bool:
    if argv_tail[1] == "relay":
        return True
    try:
        return httpx.get(f"{system.url(argv_tail[1])}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# --- the stream ---------------------------------------------------------------------------------------------


@dataclass
class Placed:
    customer: int
    side: str
    asset: str
    size: Decimal
    price: Decimal
    cancel: bool  # the customer cancels it right after placing it (racing its reservation)
    id: str = ""
    canceled: bool = False  # the cancel was accepted (200), not refused as too late (409)


@dataclass
class Stream:
    customers: list[User]
    orders: list[Placed]
    killed: dict[str, int] = field(default_factory=dict)  # component → pid killed


def make_customers(api: Api, admin: User) -> list[User]:
    with ThreadPoolExecutor(8) as pool:
        customers = list(pool.map(lambda _: api.customer(), range(CUSTOMERS)))

        def fund(customer: User) -> None:
            assert api.deposit(admin, customer, "TRY", str(START_TRY)).status_code == 200
            for asset in ASSETS:
                assert api.deposit(admin, customer, asset, str(START_STOCK)).status_code == 200

        list(pool.map(fund, customers))
    return customers


def random_orders(seed: int, quotes: dict[str, dict[str, Decimal]], count: int = ORDERS) -> list[Placed]:
    """`count` orders at limits 2–5 % through the market's `quotes` (marketable, inside the band)."""
    rng = random.Random(seed)

    def limit(side: str, asset: str) -> Decimal:
        through = Decimal(rng.randint(200, 500)) / 10_000
        if side == "BUY":
            return (quotes[asset]["ask"] * (1 + through)).quantize(CENT, ROUND_CEILING)
        return (quotes[asset]["bid"] * (1 - through)).quantize(CENT, ROUND_FLOOR)

    orders = []
    for i in range(count):
        customer, side, asset = rng.randrange(CUSTOMERS), rng.choice(("BUY", "SELL")), rng.choice(ASSETS)
        size = Decimal(rng.randint(1, 4))
        orders.append(Placed(customer, side, asset, size, limit(side, asset), cancel=i % 10 == 0))
    return orders


def retrying(send: Callable[[], httpx.Response], timeout: float = 45) -> httpx.Response:
    """`send()` again while the service is down or restarting (connection refused or cut, 5xx)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = send()
            if response.status_code < 500:
                return response
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("the service did not come back")
        time.sleep(0.2)


def place(api: Api, run: Stream, order: Placed, key: str) -> None:
    """Place `order` for its customer (retried through outages with one Idempotency-Key), then cancel it
    at once if it is one of those to cancel."""
    customer = run.customers[order.customer]
    body = {
        "customerId": customer.id,
        "assetName": order.asset,
        "orderSide": order.side,
        "size": str(order.size),
        "price": str(order.price),
    }
    headers = {"Idempotency-Key": key}
    placed = retrying(
        lambda: api.call("POST", "order", "/api/v1/orders", by=customer, headers=headers, json=body)
    )
    assert placed.status_code == 200, placed.text
    order.id = placed.json()["id"]
    if order.cancel:
        canceled = retrying(lambda: api.cancel(customer, order.id))
        assert canceled.status_code in (200, 409), canceled.text
        order.canceled = canceled.status_code == 200


def stream(api: Api, system: RunningSystem, seed: int, kills: dict[int, tuple[str, ...]]) -> Stream:
    """Place the orders from 16 threads (every 10th canceled at once by its customer); when `n` of them are
    placed, SIGKILL `kills[n]`. A request cut by a crash is retried with the same Idempotency-Key."""
    admin = api.admin()
    quotes = {asset: api.quote(admin, asset) for asset in ASSETS}
    run = Stream(make_customers(api, admin), random_orders(seed, quotes))

    with ThreadPoolExecutor(16) as pool:
        futures = [
            pool.submit(place, api, run, order, f"crash-{seed}-{i}") for i, order in enumerate(run.orders)
        ]
        pending = dict(sorted(kills.items()))
        while pending:
            done = sum(f.done() for f in futures)
            at = next(iter(pending))
            if done >= at:
                tail = pending.pop(at)
                run.killed[" ".join(tail)] = kill(system, tail)
            time.sleep(0.01)
        for future in futures:
            future.result()
    for tail in kills.values():
        wait_restarted(system, tail, run.killed[" ".join(tail)])
    return run


def wait_all_terminal(api: Api, admin: User, run: Stream, timeout: float) -> dict[str, dict[str, Any]]:
    """Every order of the stream's customers, by id, once all are terminal (or as they are at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = [order for customer in run.customers for order in api.orders_of(admin, customer)]
        ids = Counter(order["id"] for order in listed)
        assert ids == Counter(order.id for order in run.orders), "an order is missing or listed twice"
        if all(is_terminal(order) for order in listed) or time.monotonic() > deadline:
            return {order["id"]: order for order in listed}
        time.sleep(0.5)


def expected_balances(
    run: Stream, final: dict[str, dict[str, Any]]
) -> list[dict[str, tuple[Decimal, Decimal]]]:
    """Each customer's balances from the deposits and the MATCHED orders, exactly; nothing held."""
    totals = [{"TRY": START_TRY, **dict.fromkeys(ASSETS, START_STOCK)} for _ in run.customers]
    for order in run.orders:
        if final[order.id]["status"] != "MATCHED":
            continue
        sign = 1 if order.side == "BUY" else -1
        totals[order.customer]["TRY"] -= sign * order.size * Decimal(str(final[order.id]["executedPrice"]))
        totals[order.customer][order.asset] += sign * order.size
    return [{name: (amount, amount) for name, amount in balance.items()} for balance in totals]


def check_outcome(api: Api, system: RunningSystem, run: Stream, timeout: float) -> None:
    admin = api.admin()
    final = wait_all_terminal(api, admin, run, timeout)
    stuck = [order for order in final.values() if not is_terminal(order)]
    assert not stuck, f"{len(stuck)} orders never reached a final status, e.g. {stuck[:3]}"
    statuses = Counter(order["status"] for order in final.values())
    assert statuses["MATCHED"] > len(run.orders) // 4 and statuses["CANCELED"] > 0, statuses
    assert sum(order.canceled for order in run.orders) > 0  # some cancels won the race
    for placed in run.orders:  # the order the customer placed, unchanged
        order = final[placed.id]
        assert (order["orderSide"], order["assetName"]) == (placed.side, placed.asset)
        assert (Decimal(str(order["size"])), Decimal(str(order["price"]))) == (placed.size, placed.price)
        if order["status"] == "MATCHED":  # at the market's price, never beyond the limit
            executed = Decimal(str(order["executedPrice"]))
            assert executed <= placed.price if placed.side == "BUY" else executed >= placed.price, order
        if placed.canceled:
            assert (order["status"], order["reason"]) == ("CANCELED", "canceled by customer"), order
        elif order["status"] == "CANCELED":
            # A cancel whose answer a crash cut off may have been done (its retry then finds it CANCELED).
            by_customer = placed.cancel and order["reason"] == "canceled by customer"
            assert by_customer or order["reason"].startswith("insufficient usable"), order

    # Balances: exactly what the deposits and the MATCHED orders make, nothing left reserved.
    expected = expected_balances(run, final)
    for customer, want in zip(run.customers, expected, strict=True):
        got = api.wait_balances(admin, customer, want, timeout=30)
        assert got == want, (customer.username, got, want)

    # The journal: a MATCHED order has one RESERVE, one SETTLE_DEBIT and one SETTLE_CREDIT; a refused order
    # never moved anything; one canceled by its customer was released once, or never reserved.
    by_order: dict[str, Counter[str]] = {}
    for customer in run.customers:
        for entry in api.ledger_of(admin, customer):
            if entry["orderId"] is not None:
                by_order.setdefault(entry["orderId"], Counter())[entry["kind"]] += 1
    for order_id, order in final.items():
        kinds = by_order.get(order_id, Counter())
        if order["status"] == "MATCHED":
            settled = Counter(RESERVE=1, SETTLE_DEBIT=1, SETTLE_CREDIT=1)
            improved = order["orderSide"] == "BUY" and order["executedPrice"] < order["price"]
            if improved:  # the limit reserved more than the ask cost: the rest released, once
                settled["RELEASE"] = 1
            assert kinds == settled, (order_id, kinds)
        elif order["reason"] == "canceled by customer":
            assert kinds in (Counter(), Counter(RESERVE=1, RELEASE=1)), (order_id, kinds)
        else:
            assert kinds == Counter(), (order_id, kinds)

    audit = subprocess.run(
        [sys.executable, "-m", "oms", "audit", "--data-dir", str(system.data_dir)],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "every invariant holds" in audit.stdout


# --- the tests ----------------------------------------------------------------------------------------------


def test_relays_killed_mid_stream_lose_and_duplicate_nothing(api: Api, system: RunningSystem) -> None:
    run = stream(api, system, seed=1, kills={200: RELAY_ORDER, 500: RELAY_ACCOUNT})
    check_outcome(api, system, run, timeout=40)
    output = "".join(system.output)
    assert "relay-order exited with code -9" in output and "relay-account exited with code -9" in output


def test_services_killed_mid_stream_lose_and_duplicate_nothing(api: Api, system: RunningSystem) -> None:
    """The account service, the order service, then the market service killed while orders stream in (the
    order service executes at the last quote it holds meanwhile, and reads the market again when it is back).
    Deliveries a killed consumer had fetched but not acknowledged come back after the broker's ack wait
    (30 s), and what it had committed is skipped through its inbox; clients whose requests were cut
    retry with their Idempotency-Key and create nothing twice."""
    run = stream(api, system, seed=2, kills={300: ACCOUNT, 600: ORDER, 800: MARKET})
    check_outcome(api, system, run, timeout=60)
    output = "".join(system.output)
    for service in ("account", "order", "market"):
        assert f"{service} exited with code -9" in output
