"""`oms up --execution market`, as a user runs it: the order service follows the market service's quotes on
the broker, refuses the prices that minted money (issue 12's attack), executes a marketable BUY at the ask —
not at its limit — and gives the difference back, and lets a LIMIT order rest until the market crosses it."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from tests.e2e.api import Api, User, exact
from tests.e2e.conftest import RunningSystem, system_env

pytestmark = pytest.mark.e2e

SYMBOL = "AAPL"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    running = RunningSystem(
        tmp_path_factory.mktemp("oms") / "data",
        system_env(OMS_MARKET_QUOTES_PER_SECOND="5", OMS_CUSTOMER_DEPOSITS="instant"),
    )
    running.start("--execution", "market")
    yield running
    if running.process is not None:
        running.stop()


@pytest.fixture(scope="module")
def api(system: RunningSystem) -> Api:
    return Api(system)


def funded_customer(api: Api, amount: str = "100000") -> User:
    customer = api.customer()
    assert api.deposit(customer, customer, "TRY", amount).status_code == 200
    return customer


def test_the_attack_of_the_issue_is_refused(api: Api) -> None:
    customer = funded_customer(api)
    for price in ("0.000001", "0.01", "99999999999999999999"):
        answer = api.order(customer, customer, "BUY", SYMBOL, "1", price)
        assert answer.status_code == 422, (price, answer.text)
    assert api.order(customer, customer, "BUY", "ZZZ", "1", "1").status_code == 422  # not listed
    assert api.orders_of(customer, customer) == []


def test_a_marketable_buy_executes_at_the_ask_and_gets_the_difference_back(api: Api) -> None:
    customer = funded_customer(api)
    now = api.quote(customer, SYMBOL)
    limit = (Decimal(str(now["ask"])) * Decimal("1.05")).quantize(Decimal("0.01"))  # inside the band
    order_id = api.place(customer, "BUY", SYMBOL, "10", str(limit))
    order = api.wait_order(customer, order_id)
    assert order["status"] == "MATCHED", order
    executed = Decimal(str(order["executedPrice"]))
    assert executed <= limit  # at the market, never above the limit
    # Paid size × executed price, exactly; what the limit reserved beyond it is usable again.
    paid = Decimal(100000) - 10 * executed
    expected = {"TRY": (paid, paid), SYMBOL: (10, 10)}
    assert api.wait_balances(customer, customer, expected) == expected


def test_a_limit_below_the_market_rests_until_a_quote_crosses_it_or_is_canceled(api: Api) -> None:
    customer = funded_customer(api)
    now = api.quote(customer, SYMBOL)
    low = (Decimal(str(now["bid"])) * Decimal("0.92")).quantize(Decimal("0.01"))  # in the band, far below
    order_id = api.place(customer, "BUY", SYMBOL, "1", str(low))
    resting = api.wait_order(customer, order_id, until=lambda o: o.get("fundsReserved") is True, timeout=10)
    assert resting["status"] == "PENDING" and resting["executedPrice"] is None
    with httpx.Client(timeout=10) as http:
        body = {
            "customerId": customer.id,
            "assetName": SYMBOL,
            "orderSide": "BUY",
            "size": "1",
            "price": str(low),
            "timeInForce": "IOC",
        }  # fmt: skip  (not executable at once)
        ioc = exact(http.post(api.url("order", "/api/v1/orders"), json=body, headers=customer.headers))["id"]
    canceled = api.wait_order(customer, ioc)
    assert (canceled["status"], canceled["reason"]) == ("CANCELED", "not marketable")
    assert api.cancel(customer, order_id).status_code == 200
    expected = {"TRY": (100000, 100000)}  # the cancel released what the resting order held
    assert api.wait_balances(customer, customer, expected) == {"TRY": (Decimal(100000), Decimal(100000))}
