"""The first hour of a real user at the back office, in a real browser (Debian's Chromium via playwright),
against one running system for the whole module: sign-up → deposit request → an admin's approval → buy →
sell → the ledger with its running balance → CSV export; an admin placing an order for a customer; amounts
that could be read two ways refused; every action reviewed before it is done; lists paged both ways; users
disabled, enabled and given new passwords, all in the admin trail; and no serious accessibility problem on
any page, for either role, at 1366 and 390 pixels (axe-core). Screenshots go to artifacts/screens/."""

from __future__ import annotations

import csv
import io
import itertools
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.e2e.api import CENT, Api
from tests.e2e.conftest import RunningSystem, system_env
from tests.e2e.desk import PHONE, Desk, cash, last_price, serious_accessibility_problems

pytestmark = [pytest.mark.e2e, pytest.mark.long]

WIDE: ViewportSize = {"width": 1366, "height": 900}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """Orders execute at their limit price once their funds are reserved (limits near the last price, inside
    the band): the figures below are exact."""
    running = RunningSystem(tmp_path_factory.mktemp("first-hour") / "data", system_env())
    running.start("--execution", "immediate")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def api(system: RunningSystem) -> Api:
    return Api(system)


def desk(browser: Browser, api: Api, viewport: ViewportSize = WIDE) -> Desk:
    return Desk(browser, api.system.url("backoffice"), viewport)


def admin_desk(browser: Browser, api: Api, viewport: ViewportSize = WIDE) -> Desk:
    admin = desk(browser, api, viewport)
    admin.sign_in("boss", "boss-password")
    return admin


def register(person: Desk, name: str) -> None:
    password = f"{name}-password"
    page = person.go("/register")
    page.locator("#username").fill(name)
    page.locator("#password").fill(password)
    page.locator("#confirm").fill(password)
    page.get_by_role("button", name="Open account").click()
    expect(page).to_have_url(re.compile(r"/money$"))


def order(person: Desk, side: str, asset: str, size: str, price: str, title: str) -> str:
    page = person.go("/trade")
    page.locator(f"label[for=side-{side.lower()}]").click()
    page.locator("#asset").fill(asset)
    page.locator("#size").fill(size)
    page.locator("#price").fill(price)
    page.get_by_role("button", name="Review order").click()
    person.confirm(title)
    expect(page).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
    expect(page.locator("#order-status")).to_have_attribute("data-status", "MATCHED")
    return page.url.rsplit("/", 1)[1]


def download(page: Page, link: str) -> list[dict[str, str]]:
    with page.expect_download() as started:
        page.locator(link).click()
    text = Path(started.value.path()).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_sign_up_deposit_approval_buy_sell_ledger_and_export(browser: Browser, api: Api) -> None:
    name = f"ayse-{uuid.uuid4().hex[:6]}"
    customer = desk(browser, api)
    register(customer, name)
    page = customer.page
    expect(page.locator(".notice")).to_contain_text(f"Welcome, {name}")
    expect(page.locator("#deposit-amount-hint")).to_have_text(re.compile(r"^Decimals after a point \(\.\)"))

    for typed, said in (
        ("1,5", "1.5 if that is what you mean"),
        ("1e3", "no exponent"),
        ("1,000", "ambiguous"),
    ):
        page.locator("#deposit-amount").fill(typed)
        page.get_by_role("button", name="Review deposit request").click()
        expect(page.locator("#amount-error")).to_contain_text(said)
        expect(page.locator("#deposit-amount")).to_have_attribute("aria-invalid", "true")
    customer.shot("first-hour-amount-refused")
    expect(page.locator("#deposits")).to_have_count(0)  # nothing was asked for

    page.locator("#deposit-amount").fill("250,000.50")
    page.get_by_role("button", name="Review deposit request").click()
    expect(page.locator("#review-facts")).to_contain_text("250,000.50 TRY")
    customer.shot("first-hour-deposit-review")
    customer.confirm("Request a deposit of 250,000.50 TRY")
    expect(page.locator(".notice")).to_contain_text(f"Deposit of 250,000.50 TRY for {name} requested")
    request_id = (page.locator("#deposits tbody tr").first.get_attribute("id") or "").removeprefix("deposit-")

    admin = admin_desk(browser, api)
    admin.go("/admin/money").locator(f"#deposit-{request_id}").get_by_role("button", name="Approve").click()
    admin.shot("first-hour-approval-review")
    admin.confirm(f"Approve the deposit of 250,000.50 TRY for {name}")
    expect(admin.page.locator(".notice")).to_contain_text(
        f"Approved the deposit of 250,000.50 TRY for {name}"
    )

    buy = last_price(api, api.admin())
    sell = buy + 1
    bought = order(customer, "BUY", "AAPL", "10", str(buy), f"BUY 10 AAPL at {cash(buy)} TRY for {name}")
    sold = order(customer, "SELL", "AAPL", "4", str(sell), f"SELL 4 AAPL at {cash(sell)} TRY for {name}")
    left = Decimal("250000.50") - 10 * buy + 4 * sell
    customer.go("/")
    expect(customer.cell("TRY", "total")).to_have_text(cash(left))
    expect(customer.cell("AAPL", "total")).to_have_text("6")

    page = customer.go("/ledger")
    rows = page.locator("#ledger tbody tr")
    expect(rows).to_have_count(7)  # deposit; reserve + settle ×2 (TRY and AAPL for the buy) … newest first
    expect(rows.first.locator(".balance-after")).to_have_text(re.compile(rf"^(6|{re.escape(cash(left))})$"))
    cash_after = [
        row.locator(".balance-after").inner_text()
        for row in rows.all()
        if row.locator("td[data-label=Asset]").inner_text() == "TRY"
    ]
    assert cash_after[0] == cash(left) and cash_after[-1] == "250,000.50", cash_after
    expect(page.locator(f"#ledger a[href='/orders/{bought}']").first).to_be_visible()
    customer.shot("first-hour-ledger")

    exported = download(page, "#ledger-csv")
    assert len(exported) == 7
    in_cash = [r for r in exported if r["asset"] == "TRY"]
    assert (Decimal(in_cash[0]["total_after"]), in_cash[-1]["total_after"]) == (left, "250000.5")
    assert all(
        Decimal(newer["total_after"]) - Decimal(newer["delta_total"]) == Decimal(older["total_after"])
        for newer, older in itertools.pairwise(in_cash)
    )
    orders = download(customer.go("/orders"), "#orders-csv")
    assert {(o["order_id"], o["side"], o["status"]) for o in orders} == {
        (bought, "BUY", "MATCHED"),
        (sold, "SELL", "MATCHED"),
    }

    phone = Desk(browser, customer.base, PHONE, like=customer)
    page = phone.go("/ledger")
    assert phone.fits_width()
    first = page.locator("#ledger tbody tr").first
    for label in ("Time (UTC)", "Asset", "Movement", "Balance after", "Order / reference"):
        expect(first.locator(f"td[data-label='{label}']")).to_be_visible()
    phone.shot("first-hour-phone-ledger")
    for person in (customer, admin, phone):
        person.close()


def test_admin_places_an_order_for_a_customer_and_the_trail_says_so(browser: Browser, api: Api) -> None:
    boss, someone = api.admin(), api.customer()
    api.deposit(boss, someone, "TRY", "5000")
    price = last_price(api, boss, "MSFT")
    admin = admin_desk(browser, api)
    page = admin.go(f"/admin/customers/{someone.id}")
    form = page.locator("#trade")
    form.locator("#asset").fill("MSFT")
    form.locator("#size").fill("1,5")
    form.locator("#price").fill(str(price))
    form.get_by_role("button", name="Review order").click()
    expect(page.locator("#size-error")).to_contain_text("1.5 if that is what you mean")
    page.locator("#trade #size").fill("12")
    page.locator("#trade").get_by_role("button", name="Review order").click()
    expect(page.locator("#review-facts")).to_contain_text(f"{cash(12 * price)} TRY")
    admin.shot("admin-order-entry-review")
    admin.page.get_by_role("link", name="Go back").click()  # changes nothing
    assert api.orders_of(boss, someone) == []
    page.locator("#trade #asset").fill("MSFT")
    page.locator("#trade #size").fill("12")
    page.locator("#trade #price").fill(str(price))
    page.locator("#trade").get_by_role("button", name="Review order").click()
    admin.confirm(f"BUY 12 MSFT at {cash(price)} TRY for {someone.username}")
    expect(page.locator(".notice")).to_contain_text(
        f"placed: BUY 12 MSFT at {cash(price)} TRY for {someone.username}"
    )
    expect(page.locator("#order-status")).to_have_attribute("data-status", "MATCHED")
    [placed] = api.orders_of(boss, someone)
    assert (placed["assetName"], placed["size"], placed["price"]) == ("MSFT", 12, price)

    page = admin.go(f"/admin/trail?who={someone.username}")
    entry = page.locator("#trail tbody tr").first
    expect(entry).to_have_attribute("data-action", "place order")
    expect(entry).to_contain_text("boss")
    expect(entry).to_contain_text(placed["id"][:8])
    admin.shot("admin-trail")
    admin.close()


def test_a_review_is_bound_to_its_session_and_its_values(api: Api) -> None:
    """The confirmation token confirms exactly what was reviewed: other values or another session only get a
    review page again, and nothing is done."""
    boss, someone = api.admin(), api.customer()
    base = api.system.url("backoffice")
    path = f"/admin/customers/{someone.id}/deposit"
    with httpx.Client(base_url=base) as http, httpx.Client(base_url=base) as other:
        for client in (http, other):
            token = _csrf(client.get("/login").text)
            client.post("/login", data={"username": "boss", "password": "boss-password", "csrf_token": token})
        csrf = _csrf(http.get(f"/admin/customers/{someone.id}").text)
        form = {"csrf_token": csrf, "asset": "TRY", "amount": "100", "key": str(uuid.uuid4())}
        review = http.post(path, data=form)
        assert review.status_code == 200 and 'id="review"' in review.text
        confirm = re.search(r'name="confirm_token" value="([^"]+)"', review.text)
        assert confirm is not None
        altered = http.post(path, data={**form, "amount": "100000", "confirm_token": confirm.group(1)})
        assert 'id="review"' in altered.text and "100,000.00 TRY" in altered.text
        other_csrf = _csrf(other.get(f"/admin/customers/{someone.id}").text)
        stolen = other.post(path, data={**form, "csrf_token": other_csrf, "confirm_token": confirm.group(1)})
        assert 'id="review"' in stolen.text
        assert api.balances(boss, someone) == {}  # nothing was deposited
        done = http.post(path, data={**form, "confirm_token": confirm.group(1)})
        assert done.status_code == 303
        assert api.balances(boss, someone) == {"TRY": (Decimal(100), Decimal(100))}


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def test_lists_page_both_ways_with_totals_and_bad_filters_show_nothing(browser: Browser, api: Api) -> None:
    boss, someone = api.admin(), api.customer()
    api.deposit(boss, someone, "TRY", "100000")
    price = last_price(api, boss)
    placed = [api.place(someone, "BUY", "AAPL", "1", str(price + n * CENT)) for n in range(45)]
    customer = desk(browser, api)
    customer.sign_in(someone.username, "password-1")
    page = customer.go("/orders")
    position, rows = page.locator("#page-position"), page.locator("#orders tbody tr")
    expect(position).to_have_text("Page 1 of 3 · 45 orders")
    expect(rows).to_have_count(20)
    expect(rows.first).to_have_attribute("id", f"order-{placed[-1]}")
    page.get_by_role("link", name="Older ›").click()
    expect(position).to_have_text("Page 2 of 3 · 45 orders")
    second = [row.get_attribute("id") for row in rows.all()]
    page.get_by_role("link", name="Older ›").click()
    expect(position).to_have_text("Page 3 of 3 · 45 orders")
    expect(rows).to_have_count(5)
    expect(rows.last).to_have_attribute("id", f"order-{placed[0]}")
    expect(page.get_by_role("link", name="Older ›")).to_have_count(0)
    customer.shot("orders-last-page")
    page.get_by_role("link", name="‹ Newer").click()
    expect(position).to_have_text("Page 2 of 3 · 45 orders")
    assert [row.get_attribute("id") for row in rows.all()] == second
    page.get_by_role("link", name="‹ Newer").click()
    expect(position).to_have_text("Page 1 of 3 · 45 orders")
    expect(rows).to_have_count(20)
    expect(rows.first).to_have_attribute("id", f"order-{placed[-1]}")

    for n in range(25):
        assert api.deposit(someone, someone, "TRY", str(n + 1)).status_code == 202
    page = customer.go("/money")
    expect(page.locator("#deposits tbody tr")).to_have_count(10)  # the newest; every one on its own page
    page.locator("#all-deposits").click()
    expect(position).to_have_text("Page 1 of 2 · 26 deposits")  # with the admin's, credited at once
    expect(page.locator("#deposits tbody tr").first).to_contain_text("25.00 TRY")
    page.get_by_role("link", name="Older ›").click()
    expect(position).to_have_text("Page 2 of 2 · 26 deposits")
    expect(page.locator("#deposits tbody tr")).to_have_count(6)
    page.get_by_role("link", name="‹ Newer").click()
    expect(page.locator("#deposits tbody tr")).to_have_count(20)

    page = customer.go("/orders?start=2030-01-02&end=2030-01-01")
    expect(page.locator(".field-error")).to_contain_text("From is after To")
    expect(page.locator("#orders")).to_have_count(0)
    expect(page.locator("#no-orders")).to_have_text("No orders shown: correct the filters above.")
    page = customer.go("/orders?status=LOST")
    expect(page.locator("#orders")).to_have_count(0)
    customer.close()

    admin = admin_desk(browser, api)
    page = admin.go(f"/admin/orders?customer={uuid.uuid4()}")
    expect(page.locator(".field-error")).to_contain_text("no such customer")
    expect(page.locator("#orders")).to_have_count(0)
    admin.close()


def test_admin_finds_disables_enables_and_resets_a_user(browser: Browser, api: Api) -> None:
    someone = api.customer()
    admin = admin_desk(browser, api)
    page = admin.go(f"/admin/users?q={someone.username[2:8].upper()}")
    expect(page.locator("#users tbody tr")).to_have_count(1)
    page.locator(f"#users tr[data-username='{someone.username}'] a").first.click()
    page.get_by_role("button", name="Disable…").click()
    admin.confirm(f"Disable {someone.username}")
    expect(page.locator(".notice")).to_contain_text(f"{someone.username} is disabled")
    expect(page.locator("#user-state")).to_have_attribute("data-state", "disabled")
    refused = api.http.post(
        api.url("auth", "/login"), json={"username": someone.username, "password": "password-1"}
    )
    assert refused.status_code == 403  # disabled
    page = admin.go(f"/admin/users?state=disabled&q={someone.username}")
    expect(page.locator(f"#users tr[data-username='{someone.username}']")).to_have_attribute(
        "data-state", "disabled"
    )
    page.locator(f"#users tr[data-username='{someone.username}'] a").first.click()
    page.get_by_role("button", name="Enable…").click()
    admin.confirm(f"Enable {someone.username}")
    page.locator("#new-password").fill("brand-new-password")
    page.locator("#new-password-again").fill("brand-new-password")
    page.get_by_role("button", name="Set new password").click()
    expect(page.locator(".notice")).to_contain_text(f"{someone.username} has a new password")
    assert api.login(someone.username, "brand-new-password")

    page = admin.go(f"/admin/trail?who={someone.username}")
    actions = [row.get_attribute("data-action") for row in page.locator("#trail tbody tr").all()]
    assert actions == ["reset password", "enable user", "disable user"]
    exported = download(page, "#trail-csv")
    assert [(r["admin"], r["action"], r["target"]) for r in exported] == [
        ("boss", action, someone.username) for action in actions
    ]
    admin.close()


def test_instrument_changes_go_into_the_trail(browser: Browser, api: Api) -> None:
    admin = admin_desk(browser, api)
    page = admin.go("/admin/instruments?q=IBM")
    page.locator("#instrument-IBM").get_by_role("button", name="Halt").click()
    expect(page.locator("#instrument-IBM")).to_have_attribute("data-status", "HALTED")
    page.locator("#instrument-IBM").get_by_role("button", name="Reopen").click()
    expect(page.locator("#instrument-IBM")).to_have_attribute("data-status", "OPEN")
    page.locator("#symbol").fill("IBM")
    page.locator("#tick").fill("0.05")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".notice")).to_contain_text("IBM saved (tick size 0.05)")
    page = admin.go("/admin/trail?who=IBM")
    actions = [row.get_attribute("data-action") for row in page.locator("#trail tbody tr").all()]
    assert actions == ["change instrument", "reopen instrument", "halt instrument"]
    admin.close()


# --- accessibility ----------------------------------------------------------------------------------------


def _audit(person: Desk, paths: list[str], label: str, found: dict[str, Any]) -> None:
    for path in paths:
        person.go(path)
        person.settled()
        problems = serious_accessibility_problems(person.page)
        if problems:
            found[f"{label} {path}"] = problems


def _audit_review(person: Desk, path: str, button: str, label: str, found: dict[str, Any]) -> None:
    """A review page, reached the way a person reaches it."""
    person.go(path)
    person.page.get_by_role("button", name=button).first.click()
    expect(person.page.locator("#review")).to_be_visible()
    if problems := serious_accessibility_problems(person.page):
        found[f"{label} review from {path}"] = problems


@pytest.mark.parametrize("viewport", [WIDE, PHONE], ids=["1366", "390"])
def test_no_page_has_a_serious_accessibility_problem(
    browser: Browser, api: Api, viewport: ViewportSize
) -> None:
    boss, someone = api.admin(), api.customer()
    api.deposit(boss, someone, "TRY", "1000")
    price = last_price(api, boss)
    matched = api.place(someone, "BUY", "AAPL", "1", str(price))
    api.place(someone, "BUY", "AAPL", "1000", str(price))  # CANCELED, with its reason
    assert api.deposit(someone, someone, "TRY", "5").status_code == 202  # REQUESTED: every badge is shown
    found: dict[str, Any] = {}

    visitor = desk(browser, api, viewport)
    visitor.check_accessibility()
    _audit(visitor, ["/login", "/register", "/no-such-page"], "visitor", found)
    visitor.close()

    customer = desk(browser, api, viewport)
    customer.check_accessibility()
    customer.sign_in(someone.username, "password-1")
    customer_pages = ["/", "/trade", "/orders", f"/orders/{matched}", "/money", "/ledger", "/admin"]
    _audit(customer, customer_pages, "customer", found)
    customer.go("/money").locator("#deposit-amount").fill("10")
    customer.page.get_by_role("button", name="Review deposit request").click()
    if problems := serious_accessibility_problems(customer.page):
        found["customer deposit review"] = problems
    customer.close()

    admin = desk(browser, api, viewport)
    admin.check_accessibility()
    admin.sign_in("boss", "boss-password")
    admin_pages = [
        "/admin",
        "/admin/orders",
        "/admin/money",
        "/admin/users",
        f"/admin/users/{someone.id}",
        f"/admin/customers/{someone.id}",
        "/admin/trail",
        "/admin/instruments",
        "/admin/system",
        f"/orders/{matched}",
    ]
    _audit(admin, admin_pages, "admin", found)
    _audit_review(admin, f"/admin/users/{someone.id}", "Disable…", "admin", found)
    # The check sees what it must: a field without a label is a critical problem.
    admin.page.evaluate(
        "document.querySelector('main').insertAdjacentHTML('beforeend', '<input id=nameless>')"
    )
    assert any(problem["rule"] == "label" for problem in serious_accessibility_problems(admin.page))
    admin.close()
    assert found == {}, "\n".join(f"{page}: {problems}" for page, problems in found.items())
