"""Orders and accounts end to end in the default mode (`market`: executed at the quote): the running system
over HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from tests.e2e.api import Api, exact
from tests.e2e.conftest import RunningSystem

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(system: RunningSystem) -> Iterator[Api]:
    yield Api(system)


def executed(order: dict[str, Any]) -> Decimal:
    return Decimal(str(order["executedPrice"]))


def test_buy_with_enough_try_executes_at_the_ask_and_settles_exactly(api: Api) -> None:
    admin, alice = api.admin(), api.customer()
    assert api.deposit(admin, alice, "TRY", "10000.50").status_code == 200
    limit = api.marketable(alice, "BUY")
    order = api.wait_order(alice, api.place(alice, "BUY", "AAPL", "3", limit))
    assert order["status"] == "MATCHED", order
    assert order["reason"] is None and executed(order) <= Decimal(limit)
    left = Decimal("10000.50") - 3 * executed(order)  # the limit reserved more: the rest came back
    balances = api.wait_balances(admin, alice, {"TRY": (left, left), "AAPL": ("3", "3")})
    assert balances == {"TRY": (left, left), "AAPL": (Decimal(3), Decimal(3))}


def test_sell_of_held_stock_executes_at_the_bid_and_pays_proceeds(api: Api) -> None:
    admin, bob = api.admin(), api.customer()
    assert api.deposit(admin, bob, "AAPL", "10").status_code == 200
    limit = api.marketable(bob, "SELL")
    order = api.wait_order(bob, api.place(bob, "SELL", "AAPL", "4", limit))
    assert order["status"] == "MATCHED" and executed(order) >= Decimal(limit)
    proceeds = 4 * executed(order)
    expected = {"AAPL": ("6", "6"), "TRY": (proceeds, proceeds)}
    assert api.wait_balances(admin, bob, expected) == {
        "AAPL": (Decimal(6), Decimal(6)),
        "TRY": (proceeds, proceeds),
    }


def test_buy_without_enough_try_is_canceled_with_the_reason(api: Api) -> None:
    admin, carol = api.admin(), api.customer()
    api.deposit(admin, carol, "TRY", "99.99")  # MSFT is near 25: 10 of them cost more
    order = api.wait_order(carol, api.place(carol, "BUY", "MSFT", "10", api.marketable(carol, "BUY", "MSFT")))
    assert order["status"] == "CANCELED"
    assert "insufficient usable TRY" in order["reason"]
    assert api.balances(admin, carol) == {"TRY": (Decimal("99.99"), Decimal("99.99"))}


def test_sell_of_stock_not_held_is_canceled(api: Api) -> None:
    dave = api.customer()
    order = api.wait_order(dave, api.place(dave, "SELL", "IBM", "1", api.marketable(dave, "SELL", "IBM")))
    assert order["status"] == "CANCELED"
    assert "no IBM held" in order["reason"]


def test_an_unlisted_symbol_or_a_price_off_the_band_changes_nothing(api: Api) -> None:
    admin, zed = api.admin(), api.customer()
    api.deposit(admin, zed, "TRY", "1")
    assert api.order(zed, zed, "BUY", "ZZZ", "1000000", "0.000001").status_code == 422  # the attack
    for price in ("0.01", "99999999999999999999"):
        assert api.order(zed, zed, "BUY", "AAPL", "1", price).status_code == 422
    assert api.orders_of(zed, zed) == []
    assert api.balances(admin, zed) == {"TRY": (Decimal(1), Decimal(1))}


def test_exact_decimals_survive_the_whole_flow(api: Api) -> None:
    admin, erin = api.admin(), api.customer()
    api.deposit(admin, erin, "TRY", "1000.00000003")
    order = api.wait_order(erin, api.place(erin, "BUY", "MSFT", "7", api.marketable(erin, "BUY", "MSFT")))
    assert order["status"] == "MATCHED"
    left = Decimal("1000.00000003") - 7 * executed(order)
    expected = {"TRY": (left, left), "MSFT": ("7", "7")}
    assert api.wait_balances(admin, erin, expected)["TRY"] == (left, left)
    listed = exact(api.get_order(erin, order["id"]))
    assert listed["size"] == Decimal(7) and listed["executedPrice"] == executed(order)


def test_200_concurrent_buys_against_the_cost_of_20_match_exactly_20(api: Api) -> None:
    admin, frank = api.admin(), api.customer()
    limit = Decimal(api.marketable(frank, "BUY"))
    api.deposit(admin, frank, "TRY", str(20 * limit))  # each reserves its limit: 20 of them, no more
    with ThreadPoolExecutor(16) as pool:
        order_ids = list(pool.map(lambda _: api.place(frank, "BUY", "AAPL", "1", str(limit)), range(200)))
    orders = [api.wait_order(frank, order_id) for order_id in order_ids]
    matched = [o for o in orders if o["status"] == "MATCHED"]
    assert len(matched) == 20
    assert sum(o["status"] == "CANCELED" for o in orders) == 180
    left = 20 * limit - sum(executed(o) for o in matched)
    balances = api.wait_balances(admin, frank, {"TRY": (left, left), "AAPL": ("20", "20")})
    assert balances == {"TRY": (left, left), "AAPL": (Decimal(20), Decimal(20))}


def test_idempotency_key_makes_a_retried_order_and_deposit_count_once(api: Api) -> None:
    admin, gina = api.admin(), api.customer()
    deposit = {"customerId": gina.id, "assetName": "TRY", "totalSize": "50", "usableSize": "50"}
    headers = {**gina.headers, "Idempotency-Key": "dep-1"}
    first = api.http.post(api.url("account", "/api/v1/assets"), json=deposit, headers=headers)
    again = api.http.post(api.url("account", "/api/v1/assets"), json=deposit, headers=headers)
    assert first.status_code == again.status_code == 202 and first.json() == again.json()  # one request
    assert api.decide(admin, "deposit", first.json()["id"], "approve").status_code == 200
    assert api.balances(admin, gina) == {"TRY": (Decimal(50), Decimal(50))}
    other = {**deposit, "totalSize": "60", "usableSize": "60"}
    assert api.http.post(api.url("account", "/api/v1/assets"), json=other, headers=headers).status_code == 422

    price = api.resting(gina, "BUY")
    body = {"customerId": gina.id, "assetName": "AAPL", "orderSide": "BUY", "size": "1", "price": price}
    headers = {**gina.headers, "Idempotency-Key": "order-1"}
    answers = [
        api.http.post(api.url("order", "/api/v1/orders"), json=body, headers=headers) for _ in range(3)
    ]
    assert len({a.json()["id"] for a in answers}) == 1
    listed = api.http.get(api.url("order", "/api/v1/orders"), headers=gina.headers).json()["orders"]
    assert len(listed) == 1


def test_list_orders_filters_pages_and_is_newest_first(api: Api) -> None:
    admin, hank = api.admin(), api.customer()
    api.deposit(admin, hank, "TRY", "2000")
    prices = {s: api.marketable(hank, "BUY", s) for s in ("AAPL", "MSFT")}
    ids = [api.place(hank, "BUY", s, "1", prices[s]) for s in ("MSFT", "AAPL", "MSFT", "AAPL", "MSFT")]
    for order_id in ids:
        api.wait_order(hank, order_id)
    url = api.url("order", "/api/v1/orders")
    first = api.http.get(url, params={"limit": 2}, headers=hank.headers).json()
    second = api.http.get(
        url, params={"limit": 2, "cursor": first["nextCursor"]}, headers=hank.headers
    ).json()
    third = api.http.get(
        url, params={"limit": 2, "cursor": second["nextCursor"]}, headers=hank.headers
    ).json()
    paged = [o["id"] for page in (first, second, third) for o in page["orders"]]
    assert paged == list(reversed(ids))
    assert third["nextCursor"] is None
    msft = api.http.get(url, params={"assetName": "MSFT"}, headers=hank.headers).json()["orders"]
    assert {o["assetName"] for o in msft} == {"MSFT"} and len(msft) == 3
    today = msft[0]["createDate"][:10]
    dated = api.http.get(url, params={"startDate": today, "endDate": today}, headers=hank.headers).json()
    assert len(dated["orders"]) == 5
    none = api.http.get(url, params={"endDate": "2000-01-01"}, headers=hank.headers).json()
    assert none["orders"] == []


def test_withdraw_to_a_valid_iban_takes_usable_try(api: Api) -> None:
    admin, ivy = api.admin(), api.customer()
    api.deposit(admin, ivy, "TRY", "100")
    url = api.url("account", "/api/v1/assets/withdraw")
    good = {"customerId": ivy.id, "amount": "30.5", "iban": "TR33 0006 1005 1978 6457 8413 26"}
    assert api.http.post(url, json=good, headers=ivy.headers).status_code == 200
    bad_iban = {**good, "iban": "TR33 0006 1005 1978 6457 8413 27"}
    assert api.http.post(url, json=bad_iban, headers=ivy.headers).status_code == 422
    too_much = {**good, "amount": "70"}
    assert api.http.post(url, json=too_much, headers=ivy.headers).status_code == 409
    assert api.balances(admin, ivy) == {"TRY": (Decimal("69.5"), Decimal("69.5"))}
    ledger = api.http.get(api.url("account", "/api/v1/ledger"), headers=ivy.headers).json()["entries"]
    assert [e["kind"] for e in ledger] == ["WITHDRAWAL", "DEPOSIT"]


def test_audit_is_clean_after_every_flow_above(system: RunningSystem) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "oms", "audit", "--data-dir", str(system.data_dir)],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every invariant holds" in result.stdout


def test_relays_export_their_metrics_and_are_live_and_ready(system: RunningSystem, api: Api) -> None:
    for service in ("order", "account"):
        port = system.env[f"OMS_{service.upper()}_RELAY_PORT"]
        assert api.http.get(f"http://127.0.0.1:{port}/livez").json() == {"status": "ok"}
        ready = api.http.get(f"http://127.0.0.1:{port}/readyz").json()
        assert ready == {"status": "ok", "checks": {"slot": "ok", "broker": "ok"}}
        metrics = api.http.get(f"http://127.0.0.1:{port}/metrics").text
        relayed = next(
            line
            for line in metrics.splitlines()
            if line.startswith(f'oms_relay_events_total{{service="{service}"}}')
        )
        assert float(relayed.split()[-1]) > 0
        assert f'oms_relay_lag_bytes{{service="{service}"}}' in metrics
