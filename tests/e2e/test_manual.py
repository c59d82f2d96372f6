"""Manual execution mode: orders wait, reserved, for an admin to match at the market's quote (when it
crosses them) or anyone to cancel."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from tests.e2e.api import Api, User, exact
from tests.e2e.conftest import RunningSystem, system_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    running = RunningSystem(tmp_path_factory.mktemp("manual") / "data", system_env())
    running.start("--execution", "manual")
    yield Api(running)
    running.stop()


def balances(**held: tuple[Any, Any]) -> dict[str, tuple[Decimal, Decimal]]:
    return {asset: (Decimal(str(total)), Decimal(str(usable))) for asset, (total, usable) in held.items()}


def reserved_order(api: Api, side: str = "BUY") -> tuple[User, User, str]:
    """A customer with 1000 TRY and 10 AAPL, and one PENDING order of theirs for 2 AAPL whose funds are
    reserved, at a limit the market crosses (an admin's match executes it at the quote)."""
    admin, customer = api.admin(), api.customer()
    api.deposit(admin, customer, "TRY", "1000")
    api.deposit(admin, customer, "AAPL", "10")
    limit = Decimal(api.marketable(customer, side))
    order_id = api.place(customer, side, "AAPL", "2", str(limit))
    reserved = balances(TRY=(1000, 1000 - 2 * limit), AAPL=(10, 10))
    if side == "SELL":
        reserved = balances(TRY=(1000, 1000), AAPL=(10, 8))
    assert api.wait_balances(admin, customer, reserved) == reserved
    order = api.wait_order(customer, order_id, until=lambda o: o["fundsReserved"])
    assert (order["status"], order["fundsReserved"]) == ("PENDING", True)
    return admin, customer, order_id


def settled(api: Api, customer: User, order_id: str) -> dict[str, tuple[Decimal, Decimal]]:
    """The balances of `reserved_order`'s customer once its MATCHED order settled at its executed price."""
    order = exact(api.get_order(customer, order_id))
    assert order["status"] == "MATCHED", order
    cost = 2 * order["executedPrice"]
    if order["orderSide"] == "BUY":
        return balances(TRY=(1000 - cost, 1000 - cost), AAPL=(12, 12))
    return balances(TRY=(1000 + cost, 1000 + cost), AAPL=(8, 8))


def test_cancel_of_a_pending_order_releases_its_reservation(api: Api) -> None:
    admin, customer, order_id = reserved_order(api)
    response = api.http.delete(
        api.url("order", "/api/v1/orders"), params={"orderId": order_id}, headers=customer.headers
    )
    assert response.status_code == 200
    assert response.json() == {"message": "order canceled", "status": "CANCELED"}
    order = api.get_order(customer, order_id).json()
    assert (order["status"], order["reason"]) == ("CANCELED", "canceled by customer")
    untouched = balances(TRY=(1000, 1000), AAPL=(10, 10))
    assert api.wait_balances(admin, customer, untouched) == untouched
    again = api.http.delete(
        api.url("order", "/api/v1/orders"), params={"orderId": order_id}, headers=customer.headers
    )
    assert again.status_code == 409
    assert "CANCELED" in again.json()["error"]


def test_admin_match_settles_a_buy_at_the_ask(api: Api) -> None:
    admin, customer, order_id = reserved_order(api)
    matched = api.http.post(api.url("order", f"/api/v1/orders/{order_id}/match"), headers=admin.headers)
    assert matched.status_code == 200
    assert matched.json()["status"] == "MATCHED"
    assert exact(matched)["executedPrice"] <= exact(matched)["price"]  # the ask, at most the limit
    expected = settled(api, customer, order_id)
    assert api.wait_balances(admin, customer, expected) == expected
    cancel = api.http.delete(
        api.url("order", "/api/v1/orders"), params={"orderId": order_id}, headers=customer.headers
    )
    assert cancel.status_code == 409
    assert cancel.json()["error"] == "order is already MATCHED"


def test_admin_match_settles_a_sell_at_the_bid(api: Api) -> None:
    admin, customer, order_id = reserved_order(api, "SELL")
    assert (
        api.http.post(api.url("order", f"/api/v1/orders/{order_id}/match"), headers=admin.headers).status_code
        == 200
    )
    expected = settled(api, customer, order_id)
    assert api.wait_balances(admin, customer, expected) == expected


def test_an_admin_cannot_match_an_order_the_market_does_not_cross(api: Api) -> None:
    admin, customer = api.admin(), api.customer()
    api.deposit(admin, customer, "TRY", "1000")
    order_id = api.place(customer, "BUY", "AAPL", "1", api.resting(customer, "BUY"))
    api.wait_order(customer, order_id, until=lambda o: o["fundsReserved"])
    refused = api.http.post(api.url("order", f"/api/v1/orders/{order_id}/match"), headers=admin.headers)
    assert refused.status_code == 409 and "not marketable" in refused.json()["error"]
    assert exact(api.get_order(customer, order_id))["status"] == "PENDING"


def test_customer_cannot_match(api: Api) -> None:
    _, customer, order_id = reserved_order(api)
    response = api.http.post(api.url("order", f"/api/v1/orders/{order_id}/match"), headers=customer.headers)
    assert response.status_code == 403


def race_cancel_and_match(api: Api) -> str:
    """Send a cancel and a match of one reserved order at once; check one wins and balances agree."""
    admin, customer, order_id = reserved_order(api)
    cancel_url, match_url = (
        api.url("order", "/api/v1/orders"),
        api.url("order", f"/api/v1/orders/{order_id}/match"),
    )
    with ThreadPoolExecutor(2) as pool:
        cancel = pool.submit(
            api.http.delete, cancel_url, params={"orderId": order_id}, headers=customer.headers
        )
        match = pool.submit(api.http.post, match_url, headers=admin.headers)
        statuses = sorted([cancel.result().status_code, match.result().status_code])
    assert statuses == [200, 409]
    final: str = api.get_order(customer, order_id).json()["status"]
    if final == "MATCHED":
        expected = settled(api, customer, order_id)
    else:
        expected = balances(TRY=(1000, 1000), AAPL=(10, 10))
    assert api.wait_balances(admin, customer, expected) == expected
    return final


def test_cancel_racing_match_exactly_one_wins_and_balances_agree(api: Api) -> None:
    outcomes = {race_cancel_and_match(api) for _ in range(10)}
    assert outcomes <= {"MATCHED", "CANCELED"}


def test_match_before_funds_are_reserved_is_refused(api: Api) -> None:
    admin, customer = api.admin(), api.customer()
    order_id = api.place(customer, "BUY", "AAPL", "1", api.marketable(customer, "BUY"))  # no TRY: rejected
    order = api.wait_order(customer, order_id)
    assert order["status"] == "CANCELED"
    refused = api.http.post(api.url("order", f"/api/v1/orders/{order_id}/match"), headers=admin.headers)
    assert refused.status_code == 409
