"""A person at the back office in a real browser (Debian's Chromium, driven by playwright): sign in, go to
pages, fill forms, take screenshots into artifacts/screens/; and the prices and amounts a test expects to see
there."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import axe_playwright_python
from playwright.sync_api import Browser, BrowserContext, Locator, Page, ViewportSize, expect

if TYPE_CHECKING:  # api imports conftest, which imports this module
    from tests.e2e.api import Api, User

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENS = Path(__file__).resolve().parents[2] / "artifacts" / "screens"
AXE = Path(axe_playwright_python.__file__).parent / "axe.min.js"  # axe-core, vendored by that package
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}

expect.set_options(timeout=20_000)


def cash(amount: Decimal | str) -> str:
    """An amount on the cent grid as the back office shows cash: 1,234.50."""
    return f"{Decimal(amount):,.2f}"


def executed_price(api: Api, by: User, order_id: str) -> Decimal:
    """The price a MATCHED order executed at (exact)."""
    order = api.get_order(by, order_id).json()
    assert order["status"] == "MATCHED", order
    return Decimal(str(order["executedPrice"]))


def last_price(api: Api, by: User, symbol: str = "AAPL") -> Decimal:
    """`symbol`'s last price: on the tick grid and in the band, so a LIMIT order at it (or a few ticks off) is
    accepted in every mode; `immediate` mode executes at that limit, which keeps figures exact."""
    return api.quote(by, symbol)["last"]


class Desk:
    """One browser context (its own cookies) on the back office at `base`."""

    def __init__(
        self, browser: Browser, base: str, viewport: ViewportSize = DESKTOP, like: Desk | None = None
    ) -> None:
        """`like`: start signed in as that desk's user (a copy of its cookies)."""
        self.base = base
        state = like.context.storage_state() if like else None
        self.context: BrowserContext = browser.new_context(viewport=viewport, storage_state=state)
        self.page: Page = self.context.new_page()

    def go(self, path: str) -> Page:
        self.page.goto(f"{self.base}{path}")
        return self.page

    def settled(self) -> None:
        """Wait until the page is loaded and, signed in, its live stream has filled the ticker (the stream
        stays open, so the network is never idle)."""
        self.page.wait_for_load_state("load")
        if self.page.locator("#ticker").count():
            expect(self.page.locator("#ticker-list, #ticker .ticker-empty:not(.waiting)")).to_be_visible()

    def sign_in(self, username: str, password: str) -> None:
        """Sign in with the keyboard only: type, Tab to the password, Enter to submit."""
        self.go("/login")
        self.page.locator("#username").fill(username)
        self.page.keyboard.press("Tab")
        expect(self.page.locator("#password")).to_be_focused()
        self.page.keyboard.type(password)
        self.page.keyboard.press("Enter")
        expect(self.page).not_to_have_url(re.compile(r"/login"))

    def confirm(self, title: str | re.Pattern[str] | None = None) -> None:
        """On a review page (checking its title, if given), press its Confirm button."""
        review = self.page.locator("#review")
        expect(review).to_be_visible()
        if title is not None:
            expect(review.locator("h1")).to_have_text(title)
        self.page.locator("#confirm").click()
        expect(self.page.locator("#review")).to_have_count(0)

    def shot(self, name: str) -> None:
        SCREENS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=True)

    def cell(self, asset: str, field: str) -> Locator:
        """A figure of the balances table: total, usable or reserved of `asset`."""
        return self.page.locator(f"#balances tr[data-asset='{asset}'] td[data-field='{field}']")

    def fits_width(self) -> bool:
        """No sideways scrolling of the whole page (tables may scroll inside their own box)."""
        width: int = self.page.evaluate("document.documentElement.scrollWidth")
        viewport: int = self.page.evaluate("window.innerWidth")
        return width <= viewport

    def check_accessibility(self) -> None:
        """Run axe-core in this desk's pages from now on (init scripts are not subject to the page's CSP)."""
        self.context.add_init_script(path=str(AXE))

    def close(self) -> None:
        self.context.close()


def serious_accessibility_problems(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the page as it is now (after `check_accessibility`)."""
    found: list[dict[str, Any]] = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .filter(v => v.impact === "serious" || v.impact === "critical")
            .map(v => ({rule: v.id, impact: v.impact, help: v.help,
                        where: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))"""
    )
    return found
