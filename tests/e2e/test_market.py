"""The market service in the running system (`oms up`): its port answers, the instruments of the shipped data
set are listed, quotes flow (raised to 5 a second per symbol, so that waiting is short), and an admin halts,
reopens and lists instruments in the back office."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.api import Api
from tests.e2e.conftest import RunningSystem, system_env
from tests.e2e.desk import Desk

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    running = RunningSystem(
        tmp_path_factory.mktemp("oms") / "data", system_env(OMS_MARKET_QUOTES_PER_SECOND="5")
    )
    running.start()
    yield running
    if running.process is not None:
        running.stop()


def test_up_starts_the_market_and_prints_its_url(system: RunningSystem) -> None:
    assert f"market      {system.url('market')}" in "".join(system.output)
    assert httpx.get(f"{system.url('market')}/health").json()["status"] == "ok"


def test_the_instruments_of_the_data_set_are_listed_and_their_quotes_flow(system: RunningSystem) -> None:
    customer = Api(system).customer()
    market = httpx.Client(base_url=system.url("market"), headers=customer.headers, timeout=10)
    instruments = market.get("/api/v1/instruments").json()["instruments"]
    assert len(instruments) == 524 and {"AAPL", "MSFT", "BRK.B"} <= {i["symbol"] for i in instruments}

    first = _aapl(market)
    deadline = time.monotonic() + 10
    while (latest := _aapl(market))["sequence"] <= first["sequence"]:
        assert time.monotonic() < deadline, "no new quote of AAPL within 10 s"
        time.sleep(0.1)
    assert latest["bid"] < latest["ask"]
    with market.stream("GET", "/api/v1/quotes/stream", params={"symbol": "AAPL"}) as stream:
        data = next(line for line in stream.iter_lines() if line.startswith("data: "))
    assert json.loads(data.removeprefix("data: "))["sequence"] >= latest["sequence"]


def _aapl(market: httpx.Client) -> dict[str, float]:
    quotes: list[dict[str, float]] = market.get("/api/v1/quotes", params={"symbol": "AAPL"}).json()["quotes"]
    return quotes[0] if quotes else {"sequence": 0}


def test_an_admin_halts_reopens_and_lists_instruments_in_the_back_office(
    system: RunningSystem, browser: Browser
) -> None:
    admin = Api(system).admin()
    desk = Desk(browser, system.url("backoffice"))
    desk.sign_in("boss", "boss-password")
    page = desk.go("/admin/instruments?q=AAPL")
    row = page.locator("#instrument-AAPL")
    expect(row).to_have_attribute("data-status", "OPEN")
    row.get_by_role("button", name="Halt").click()
    expect(page.locator("#instrument-AAPL")).to_have_attribute("data-status", "HALTED")
    market = httpx.Client(base_url=system.url("market"), headers=admin.headers, timeout=10)
    assert market.get("/api/v1/instruments/AAPL").json()["status"] == "HALTED"
    page.locator("#instrument-AAPL").get_by_role("button", name="Reopen").click()
    expect(page.locator("#instrument-AAPL")).to_have_attribute("data-status", "OPEN")

    page.locator("#symbol").fill("THYAO")
    page.locator("#name").fill("Türk Hava Yolları")
    page.locator("#reference").fill("312.25 TRY")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#reference-error")).to_be_visible()
    page.locator("#reference").fill("312.25")
    page.locator("#tick").fill("0.25")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#instrument-THYAO")).to_have_attribute("data-status", "OPEN")
    desk.shot("admin-instruments")
    assert market.get("/api/v1/instruments/THYAO").json()["tickSize"] == 0.25
