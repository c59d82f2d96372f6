"""`immediate` and `manual` execution (SPEC §3b) on the running flow: the price band holds in every mode,
`immediate` executes at the limit, an admin's match in `manual` mode executes at the quote or is refused
with it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest

from oms.kernel.settings import ExecutionMode
from oms.runtime.nats import EmbeddedNats
from tests.integration.market_system import MarketSystem, running

D = Decimal
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="class")
async def immediate(
    make_database: Callable[[str], str], nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MarketSystem]:
    data_dir = tmp_path_factory.mktemp("immediate")
    async with running(make_database, nats_server, data_dir, ExecutionMode.IMMEDIATE) as system:
        yield system


@pytest.fixture(scope="class")
async def manual(
    make_database: Callable[[str], str], nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MarketSystem]:
    async with running(
        make_database, nats_server, tmp_path_factory.mktemp("manual"), ExecutionMode.MANUAL
    ) as system:
        yield system


class TestImmediate:
    async def test_limit_executes_at_its_limit_price(self, immediate: MarketSystem) -> None:
        symbol = immediate.listed()
        await immediate.quote(symbol, "299.95", "300.05", last="300")
        customer = await immediate.customer("4000")
        order = await immediate.settled(
            await immediate.placed(customer, assetName=symbol, price="310"), "MATCHED"
        )
        assert order["executedPrice"] == 310
        assert await immediate.balances(customer) == {"TRY": (D(900), D(900)), symbol: (D(10), D(10))}

    async def test_the_band_holds_the_attack_refused(self, immediate: MarketSystem) -> None:
        symbol = immediate.listed()
        await immediate.quote(symbol, "299.95", "300.05", last="300")
        mallory = await immediate.customer("1", **{symbol: "1000000"})
        buy = await immediate.place(mallory, assetName=symbol, size="1000000", price="0.05")
        sell = await immediate.place(
            mallory, assetName=symbol, orderSide="SELL", size="1000000", price="99999999999999999999"
        )
        assert (buy.status_code, sell.status_code) == (422, 422)
        assert "outside the price band" in buy.json()["error"]

    async def test_market_order_executes_at_the_quote(self, immediate: MarketSystem) -> None:
        symbol = immediate.listed()
        await immediate.quote(symbol, "299.95", "300.05")
        customer = await immediate.customer("0", **{symbol: "10"})
        order_id = await immediate.placed(customer, assetName=symbol, orderSide="SELL", orderType="MARKET")
        assert (await immediate.settled(order_id, "MATCHED"))["executedPrice"] == 299.95


class TestManual:
    async def test_admins_match_at_the_quote_once_it_crosses_the_order(self, manual: MarketSystem) -> None:
        symbol = manual.listed()
        await manual.quote(symbol, "299.95", "300.05")
        customer = await manual.customer("3000")
        order_id = await manual.placed(customer, assetName=symbol, price="299")
        await manual.resting(order_id)
        match = f"{manual.urls['order']}/api/v1/orders/{order_id}/match"

        refused = await manual.http.post(match, headers=manual.admin.headers)
        assert refused.status_code == 409
        assert refused.json()["error"] == "order is not marketable: bid 299.95, ask 300.05"
        assert refused.json()["detail"]["quote"]["ask"] == "300.05"
        assert (await manual.http.post(match, headers=customer.headers)).status_code == 403

        await manual.quote(symbol, "298.80", "298.90")
        assert (await manual.order(order_id))["status"] == "PENDING"  # no quote executes in manual mode
        matched = await manual.http.post(match, headers=manual.admin.headers)
        assert (matched.status_code, matched.json()["executedPrice"]) == (200, 298.9)
        await manual.settled(order_id, "MATCHED")
        assert await manual.balances(customer) == {"TRY": (D(11), D(11)), symbol: (D(10), D(10))}
        assert (await manual.audit()).violations == []

    async def test_the_band_holds(self, manual: MarketSystem) -> None:
        symbol = manual.listed()
        answer = await manual.place(await manual.customer("3000"), assetName=symbol, price="1000")
        assert answer.status_code == 422 and "outside the price band" in answer.json()["error"]
