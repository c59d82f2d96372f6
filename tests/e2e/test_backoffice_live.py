"""Live updates in the back office, in a real browser (Debian's Chromium via playwright) on one running system
(`--execution manual`, so that an admin's match decides when an order executes; 5 quotes a second per symbol):
the ticker strip moves on every signed-in page without a reload, a symbol's chart follows its quotes, an
order's page and the order lists flip to MATCHED or CANCELED as it happens, and the new pages have no serious
accessibility problem for either role at 1366 and 390 pixels."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.e2e.api import Api, User
from tests.e2e.conftest import RunningSystem, system_env
from tests.e2e.desk import PHONE, Desk, cash, executed_price, serious_accessibility_problems

pytestmark = pytest.mark.e2e
WIDE: ViewportSize = {"width": 1366, "height": 900}
CHANGE = re.compile(r"^[▲▼■] ([+-]\d[\d,]*\.\d{2}|0\.00) \(([+-]\d+\.\d{2}|0\.00) %\)")


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    env = system_env(OMS_MARKET_QUOTES_PER_SECOND="5", OMS_BACKOFFICE_TICKER="AAPL,MSFT")
    running = RunningSystem(tmp_path_factory.mktemp("live") / "data", env)
    running.start("--execution", "manual")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(system: RunningSystem) -> Api:
    return Api(system)


def signed_in(browser: Browser, api: Api, who: User, viewport: ViewportSize = WIDE) -> Desk:
    desk = Desk(browser, api.system.url("backoffice"), viewport)
    desk.sign_in(who.username, "boss-password" if who.username == "boss" else "password-1")
    return desk


def mark_page(page: Page) -> None:
    """Leave a mark in the page's JavaScript state: it is gone if the page is ever loaded again."""
    page.evaluate("window.notReloaded = true")


def not_reloaded(page: Page) -> bool:
    return bool(page.evaluate("window.notReloaded === true"))


def marketable_buy(api: Api, customer: User, size: str = "1") -> str:
    """A BUY of AAPL 3 % above the ask (marketable: an admin's match still crosses the quote minutes later; in
    manual mode it waits, reserved, for that match)."""
    order_id = api.place(customer, "BUY", "AAPL", size, api.marketable(customer, "BUY"))
    order = api.wait_order(customer, order_id, until=lambda o: bool(o["fundsReserved"]))
    assert (order["status"], order["fundsReserved"]) == ("PENDING", True), order
    return order_id


@pytest.fixture(scope="module")
def customer(api: Api) -> User:
    someone = api.customer()
    assert api.deposit(api.admin(), someone, "TRY", "100000").status_code == 200
    return someone


def test_the_ticker_moves_on_the_page_without_a_reload(browser: Browser, api: Api, customer: User) -> None:
    desk = signed_in(browser, api, customer)
    page = desk.go("/")
    desk.settled()
    aapl = page.locator("#tick-AAPL")
    expect(aapl).to_be_visible()
    assert [t.get_attribute("data-symbol") for t in page.locator(".tick").all()][:2] == ["AAPL", "MSFT"]
    mark_page(page)
    first = int(aapl.get_attribute("data-sequence") or 0)
    expect(aapl).not_to_have_attribute("data-sequence", str(first), timeout=10_000)
    assert int(page.locator("#tick-AAPL").get_attribute("data-sequence") or 0) > first
    assert CHANGE.match(page.locator("#tick-AAPL [data-field=change] [aria-hidden]").inner_text())
    assert page.locator("#tick-AAPL").get_attribute("class") in {
        "tick tick-up",
        "tick tick-down",
        "tick tick-flat",
    }
    assert not_reloaded(page)
    desk.shot("live-ticker")

    page.locator("#tick-AAPL a").click()
    expect(page).to_have_url(re.compile(r"/market/AAPL$"))
    chart = page.locator("#price-chart")
    expect(chart.locator("svg")).to_be_visible()
    mark_page(page)
    points = int(chart.get_attribute("data-points") or 0)
    expect(page.locator(f"#price-chart:not([data-points='{points}'])")).to_be_visible(timeout=10_000)
    assert not_reloaded(page)
    desk.shot("live-chart")
    desk.close()


def test_an_order_flips_to_matched_and_canceled_on_screen_without_a_reload(
    browser: Browser, api: Api, customer: User
) -> None:
    matched, canceled = marketable_buy(api, customer), marketable_buy(api, customer)
    desk = signed_in(browser, api, customer)
    order_page = desk.go(f"/orders/{matched}")
    expect(order_page.locator("#order-status")).to_have_attribute("data-status", "PENDING")
    mark_page(order_page)
    list_page = desk.context.new_page()
    list_page.goto(f"{desk.base}/orders")
    expect(list_page.locator(f"#order-{matched}")).to_have_attribute("data-status", "PENDING")
    mark_page(list_page)
    boss = api.admin()
    admin = signed_in(browser, api, boss)
    admin_list = admin.go(f"/admin/orders?customer={customer.id}")
    expect(admin_list.locator(f"#order-{canceled}")).to_have_attribute("data-status", "PENDING")
    mark_page(admin_list)

    assert api.match(boss, matched).status_code == 200
    expect(order_page.locator("#order-status")).to_have_attribute("data-status", "MATCHED")
    executed_at = f"Executed at {cash(executed_price(api, boss, matched))} TRY"  # the ask at the match
    expect(order_page.locator("#order-status")).to_contain_text(executed_at)
    expect(list_page.locator(f"#order-{matched}")).to_have_attribute("data-status", "MATCHED")
    expect(admin_list.locator(f"#order-{matched}")).to_have_attribute("data-status", "MATCHED")
    desk.shot("live-order-matched")

    assert api.cancel(customer, canceled).status_code == 200
    expect(list_page.locator(f"#order-{canceled}")).to_have_attribute("data-status", "CANCELED")
    expect(admin_list.locator(f"#order-{canceled}")).to_have_attribute("data-status", "CANCELED")
    assert all(not_reloaded(p) for p in (order_page, list_page, admin_list))
    desk.close()
    admin.close()


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1366", "390"])
def test_the_live_pages_have_no_serious_accessibility_problem(
    browser: Browser, api: Api, customer: User, viewport: ViewportSize
) -> None:
    order_id = marketable_buy(api, customer)
    found: dict[str, Any] = {}
    for who, paths in (
        (customer, ["/", "/market/AAPL", f"/orders/{order_id}", "/orders"]),
        (api.admin(), ["/admin", "/market/MSFT", "/admin/orders"]),
    ):
        desk = signed_in(browser, api, who, viewport)
        desk.check_accessibility()
        for path in paths:
            desk.go(path)
            desk.settled()
            if path.startswith("/market/"):
                expect(desk.page.locator("#price-chart svg")).to_be_visible()
            if problems := serious_accessibility_problems(desk.page):
                found[f"{who.username} {path}"] = problems
            assert desk.fits_width(), f"{path} scrolls sideways at {viewport['width']} px"
        desk.close()
    assert found == {}, "\n".join(f"{page}: {problems}" for page, problems in found.items())
