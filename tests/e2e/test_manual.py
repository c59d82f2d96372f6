"""Manual execution mode: orders wait, reserved, for an admin to match or anyone to cancel."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from tests.e2e.api import Api, User
from tests.e2e.conftest import RunningSystem, system_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    running = RunningSystem(tmp_path_factory.mktemp("manual") / "data", system_env())
    running.start("--execution", "manual")
    yield Api(running)
    running.stop()


def reserved_order(api: Api, side: str = "BUY") -> tuple[User, User, str]:
    """A customer with 100 TRY and 10 AAPL, and one PENDING order of theirs whose funds are reserved."""
    admin, customer = api.admin(), api.customer()
    api.deposit(admin, customer, "TRY", "100")
    api.deposit(admin, customer, "AAPL", "10")
    order_id = api.place(customer, side, "AAPL", "2", "15")
    reserved = (
        {"TRY": ("100", "70"), "AAPL": ("10", "10")}
        if side == "BUY"
        else {
            "TRY": ("100", "100"),
            "AAPL": ("10", "8"),
        }
    )
    assert api.wait_balances(admin, customer, reserved) == {
        k: (Decimal(t), Decimal(u)) for k, (t, u) in reserved.items()
    }
    order = api.wait_order(customer, order_id, until=lambda o: o["fundsReserved"])
    assert (order["status"], order["fundsReserved"]) == ("PENDING", True)
    return admin, customer, order_id


def test_cancel_of_a_pending_order_releases_its_reservation(api: Api) -> None:
    admin, customer, order_id = reserved_order(api)
    response = api.http.delete(
        api.url("order", "/api/v1/orders"), params={"orderId": order_id}, headers=customer.headers
    )
    assert response.status_code == 200
    assert response.json() == {"message": "order canceled", "status": "CANCELED"}
    order = api.get_order(customer, order_id).json()
    assert (order["status"], order["reason"]) == ("CANCELED", "canceled by customer")
    assert api.wait_balances(admin, customer, {"TRY": ("100", "100"), "AAPL": ("10", "10")})["TRY"] == (
        Decimal(100),
        Decimal(100),
    )
    again = api.http.delete(
        api.url("order", "/api/v1/orders"), params={"orderId": order_id}, headers=customer.headers
    )
    assert again.status_code == 409
    assert "CANCELED" in again.json()["error"]


def test_admin_match_settles_a_buy(api: Api) -> None:
    admin, customer, order_id = reserved_order(api)
    matched = api.http.post(api.url("order", f"/api/v1/orders/{order_id}/match"), headers=admin.headers)
    assert matched.status_code == 200
    assert matched.json()["status"] == "MATCHED"
    expected = {"TRY": ("70", "70"), "AAPL": ("12", "12")}
    assert api.wait_balances(admin, customer, expected) == {
        k: (Decimal(t), Decimal(u)) for k, (t, u) in expected.items()
    }
    cancel = api.http.delete(
        api.url("order", "/api/v1/orders"), params={"orderId": order_id}, headers=customer.headers
    )
    assert cancel.status_code == 409
    assert cancel.json()["error"] == "order is already MATCHED"


def test_admin_match_settles_a_sell(api: Api) -> None:
    admin, customer, order_id = reserved_order(api, "SELL")
    assert (
        api.http.post(api.url("order", f"/api/v1/orders/{order_id}/match"), headers=admin.headers).status_code
        == 200
    )
    expected = {"TRY": ("130", "130"), "AAPL": ("8", "8")}
    assert api.wait_balances(admin, customer, expected)["TRY"] == (Decimal(130), Decimal(130))


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
        expected = {"TRY": ("70", "70"), "AAPL": ("12", "12")}
    else:
        expected = {"TRY": ("100", "100"), "AAPL": ("10", "10")}
    got = api.wait_balances(admin, customer, expected)
    assert got == {k: (Decimal(t), Decimal(u)) for k, (t, u) in expected.items()}
    return final


def test_cancel_racing_match_exactly_one_wins_and_balances_agree(api: Api) -> None:
    outcomes = {race_cancel_and_match(api) for _ in range(10)}
    assert outcomes <= {"MATCHED", "CANCELED"}


def test_match_before_funds_are_reserved_is_refused(api: Api) -> None:
    admin, customer = api.admin(), api.customer()
    order_id = api.place(customer, "BUY", "AAPL", "1", "1")  # no TRY: will be rejected
    order = api.wait_order(customer, order_id)
    assert order["status"] == "CANCELED"
    refused = api.http.post(api.url("order", f"/api/v1/orders/{order_id}/match"), headers=admin.headers)
    assert refused.status_code == 409
