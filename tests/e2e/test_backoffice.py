"""The back office in a real browser (Debian's Chromium via playwright) against the running system: the
customer's journey, an admin's work in both execution modes, the System page, and what a customer must not
reach. Screenshots of the main pages go to artifacts/screens/."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from functools import partial

import httpx
import pytest
from playwright.sync_api import Browser, Request, expect

from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.permissions import OPERATOR
from tests.e2e.api import Api, User
from tests.e2e.conftest import RunningSystem, system_env
from tests.e2e.desk import PHONE, Desk, cash, executed_price

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api(system: RunningSystem) -> Api:
    return Api(system)


@pytest.fixture(scope="module")
def manual(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    running = RunningSystem(tmp_path_factory.mktemp("bo-manual") / "data", system_env())
    running.start("--execution", "manual")
    yield Api(running)
    running.stop()


def desk(browser: Browser, api: Api) -> Desk:
    return Desk(browser, api.system.url("backoffice"))


def place(customer: Desk, side: str, asset: str, size: str, price: str) -> str:
    """Place an order through the Trade form; returns its id (from the order page it leads to)."""
    page = customer.go("/trade")
    page.locator(f"label[for=side-{side.lower()}]").click()
    page.locator("#asset").fill(asset)
    page.locator("#size").fill(size)
    page.locator("#price").fill(price)
    page.get_by_role("button", name="Review order").click()
    customer.confirm()
    expect(page).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
    expect(page.locator(".notice")).to_contain_text(f"placed: {side} {size} {asset}")
    return page.url.rsplit("/", 1)[1]


def test_customer_registers_is_funded_buys_and_sees_a_refusal_explained(browser: Browser, api: Api) -> None:
    name = f"ayse-{uuid.uuid4().hex[:6]}"
    customer = desk(browser, api)
    page = customer.go("/register")
    customer.shot("register")
    page.locator("#username").fill(name)
    page.locator("#password").fill("ayse-password")
    page.locator("#confirm").fill("ayse-password")
    page.get_by_role("button", name="Open account").click()
    expect(page).to_have_url(re.compile(r"/money$"))  # signed in at once, where the money comes in
    expect(page.locator(".notice")).to_contain_text(f"Welcome, {name}")
    page = customer.go("/")
    expect(page.locator("#no-balances")).to_be_visible()
    assert page.evaluate("document.cookie") == ""  # the session cookie is HttpOnly: no script sees it
    customer.shot("customer-balances-empty")

    admin = desk(browser, api)
    admin.sign_in("boss", "boss-password")
    admin.go("/admin/users").locator(f"tr[data-username='{name}']").get_by_role(
        "link", name="Account"
    ).click()
    admin.page.locator("#deposit-amount").fill("1000")
    admin.page.get_by_role("button", name="Review deposit").click()
    admin.confirm(f"Deposit 1,000.00 TRY for {name}")
    expect(admin.page.locator(".notice")).to_contain_text(f"Deposited 1,000.00 TRY for {name}")
    expect(admin.cell("TRY", "usable")).to_have_text("1,000.00")
    admin.shot("admin-customer")

    page = customer.go("/trade")
    page.locator("#asset").fill("TRY")
    page.locator("#size").fill("0")
    page.locator("#price").fill("ten")
    page.get_by_role("button", name="Review order").click()
    expect(page.locator("#asset-error")).to_contain_text("TRY is cash")
    expect(page.locator("#size-error")).to_have_text("Size must be greater than 0.")
    expect(page.locator("#price-error")).to_contain_text("Price: must be a number")
    customer.shot("customer-trade-errors")

    boss = api.admin()
    limit = api.marketable(boss, "BUY")  # executes at once, at the ask
    bought = place(customer, "BUY", "AAPL", "3", limit)
    expect(customer.page.locator("#order-status")).to_have_attribute("data-status", "MATCHED")
    price = executed_price(api, boss, bought)
    assert price <= Decimal(limit)
    expect(customer.page.locator("#order-status")).to_contain_text(f"Executed at {cash(price)} TRY")
    customer.shot("customer-order-matched")
    left = 1000 - 3 * price  # the limit reserved more: the rest came back
    customer.go("/")  # the table follows the settlement on its own
    for asset, field, value in (
        ("TRY", "total", cash(left)),
        ("TRY", "usable", cash(left)),
        ("AAPL", "total", "3"),
    ):
        expect(customer.cell(asset, field)).to_have_text(value)
    customer.page.reload()  # the chart is drawn with the page
    # deposit, reserve, settle, the rest of the reservation released
    expect(customer.page.locator("figure.chart svg circle")).to_have_count(4)
    customer.shot("customer-balances")

    msft = api.marketable(boss, "BUY", "MSFT")
    refused = place(customer, "BUY", "MSFT", "100", msft)  # MSFT is near 25: 100 cost more than is left
    expect(customer.page.locator("#order-status")).to_have_attribute("data-status", "CANCELED")
    expect(customer.page.locator("#order-reason")).to_contain_text("insufficient usable TRY")
    customer.shot("customer-order-canceled")

    page = customer.go("/orders?status=CANCELED")
    expect(page.locator("#orders tbody tr")).to_have_count(1)
    expect(page.locator(f"#order-{refused} .reason")).to_contain_text(
        f"{cash(100 * Decimal(msft))} needed, {cash(left)} usable"
    )
    page = customer.go("/orders")
    expect(page.locator(f"#order-{bought}")).to_have_attribute("data-status", "MATCHED")
    customer.shot("customer-orders")
    page = customer.go("/ledger")
    expect(page.locator("#ledger tbody tr")).to_have_count(5)  # TRY ×4 as on the chart, AAPL bought
    customer.shot("customer-ledger")

    phone = Desk(browser, customer.base, PHONE, like=customer)
    for path, shot in (("/", "phone-balances"), ("/trade", "phone-trade"), ("/orders", "phone-orders")):
        phone.go(path)
        assert phone.fits_width(), path
        phone.shot(shot)
    for person in (customer, admin, phone):
        person.close()


def test_a_customer_cannot_reach_admin_pages_or_another_customers_data(browser: Browser, api: Api) -> None:
    admin, mine, theirs = api.admin(), api.customer(), api.customer()
    api.deposit(admin, theirs, "TRY", "500")
    their_order = api.place(theirs, "BUY", "AAPL", "1", api.marketable(theirs, "BUY"))
    customer = desk(browser, api)
    customer.sign_in(mine.username, "password-1")
    for path in ("/admin", "/admin/users", "/admin/orders", f"/admin/customers/{theirs.id}", "/admin/system"):
        page = customer.go(path)
        expect(page.locator("h1")).to_have_text("Not allowed")
        expect(page.locator("main")).to_contain_text("admins only")
        if path == "/admin/system":
            customer.shot("customer-refused-admin-page")
    page = customer.go(f"/orders/{their_order}")
    expect(page.locator("h1")).to_have_text("Not found")
    page = customer.go(f"/orders?customer={theirs.id}&customerId={theirs.id}")
    expect(page.locator("#no-orders")).to_be_visible()
    page = customer.go(f"/ledger?customerId={theirs.id}")
    expect(page.locator("#ledger")).to_have_count(0)
    page = customer.go(f"/?customerId={theirs.id}")
    expect(page.locator("#no-balances")).to_be_visible()
    customer.close()


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
# Recorded by the browser itself on every page (playwright's init scripts are not subject to the page's CSP).
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def _visit_checking_headers(person: Desk, paths: list[str], violations: list[str]) -> None:
    for path in paths:
        response = person.page.goto(f"{person.base}{path}")
        assert response is not None and response.ok, path
        headers = response.headers
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, path
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, path
        assert {k: headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS, path
        person.page.wait_for_timeout(300)  # htmx loads and starts its polling
        violations += person.page.evaluate("window.cspViolations")


def test_every_page_sends_the_security_headers_and_nothing_breaks_its_policy(
    browser: Browser, api: Api
) -> None:
    """No inline script or style anywhere (htmx included, while it polls and swaps), never in a frame."""
    admin, customer = api.admin(), api.customer()
    api.deposit(admin, customer, "TRY", "1000")
    order_id = api.place(customer, "BUY", "AAPL", "1", api.marketable(customer, "BUY"))
    violations: list[str] = []
    console: list[str] = []
    people = []
    for user, password, paths in (
        (customer.username, "password-1", ["/", "/trade", "/orders", f"/orders/{order_id}", "/ledger"]),
        (
            "boss",
            "boss-password",
            ["/admin", "/admin/users", "/admin/orders", f"/admin/customers/{customer.id}", "/admin/system"],
        ),
    ):
        person = desk(browser, api)
        person.context.add_init_script(RECORD_VIOLATIONS)
        person.page.on(
            "console", lambda m: console.append(m.text) if "Content Security Policy" in m.text else None
        )
        _visit_checking_headers(person, ["/login", "/register"], violations)
        person.sign_in(user, password)
        _visit_checking_headers(person, paths, violations)
        person.page.wait_for_timeout(3500)  # at least one round of every htmx poll on the last page
        violations += person.page.evaluate("window.cspViolations")
        people.append(person)
    assert violations == [] and console == [], (violations, console)
    # The detector works: an inline script put into the page is blocked and reported.
    people[0].page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
        " document.body.appendChild(s); }"
    )
    people[0].page.wait_for_timeout(300)
    assert people[0].page.evaluate("window.ran") is None
    assert people[0].page.evaluate("window.cspViolations") != []
    for person in people:
        person.close()


def _poison(operator: NatsAccess) -> None:
    """Publish a message no consumer can read (as the operator: nobody else may publish order events and
    the relay would publish only real ones): the account consumer dead-letters it at once."""

    async def publish() -> None:
        client = await connect_nats(operator, once=True)
        try:
            await client.jetstream().publish(
                "oms.order.created", b"not an event", headers={"Nats-Msg-Id": str(uuid.uuid4())}
            )
        finally:
            await client.close()

    with ThreadPoolExecutor(1) as thread:  # playwright's own event loop runs in this thread
        thread.submit(asyncio.run, publish()).result(timeout=30)


def test_system_page_shows_health_backlog_dead_letters_and_runs_the_audit(browser: Browser, api: Api) -> None:
    _poison(api.system.broker_access(OPERATOR))
    admin = desk(browser, api)
    admin.sign_in("boss", "boss-password")
    page = admin.go("/admin/system")
    for component in ("auth", "order", "account", "market", "nats", "relay-order", "relay-account"):
        expect(page.locator(f"#health tr[data-component='{component}']")).to_have_attribute("data-ok", "true")
    expect(page.locator("#backlog tr[data-measure='redelivered'] td")).to_have_count(2)
    for _ in range(50):  # the dead letter is written a moment after the publish
        if page.locator("#dead-letter-list tbody tr").count():
            break
        page.wait_for_timeout(200)
        page.reload()
    letter = page.locator("#dead-letter-list tbody tr").first
    expect(letter).to_contain_text("malformed event")
    seq = letter.get_attribute("data-seq")
    page.get_by_role("button", name="Run audit").click()
    expect(page.locator("#audit-result")).to_have_attribute("data-clean", "true")
    expect(page.locator("#audit-result")).to_contain_text("Every invariant holds")
    admin.shot("admin-system")
    letter.get_by_role("button", name="Replay").click()
    # The service applies a replayed letter with its own handler (it may not republish it): a message that
    # is not an event cannot be applied, and stays. (A letter that applies: tests/integration/test_dlq.py.)
    expect(page.locator("main")).to_contain_text(f":{seq} is not an event")  # `<consumer>:<seq>`
    page = admin.go("/admin/system")
    expect(page.locator(f"#dead-letter-list tr[data-seq='{seq}']")).to_have_count(1)
    admin.close()


def _reserved(api: Api, customer: User, order_id: str) -> None:
    order = api.wait_order(customer, order_id, until=lambda o: o["fundsReserved"])
    assert (order["status"], order["fundsReserved"]) == ("PENDING", True)


def test_admin_in_manual_mode_matches_and_cancels_while_the_customer_watches(
    browser: Browser, manual: Api
) -> None:
    boss, buyer = manual.admin(), manual.customer()
    manual.deposit(boss, buyer, "TRY", "1000")
    customer = desk(browser, manual)
    customer.sign_in(buyer.username, "password-1")
    limit = manual.marketable(buyer, "BUY")  # crosses the ask when the admin matches it
    to_match = place(customer, "BUY", "AAPL", "2", limit)
    _reserved(manual, buyer, to_match)
    expect(customer.page.locator("#order-status")).to_contain_text("Funds reserved; waiting to be matched")
    customer.page.evaluate("window.stillTheSamePage = true")

    admin = desk(browser, manual)
    admin.sign_in("boss", "boss-password")
    expect(admin.page.locator(f"#order-{to_match}")).to_be_visible()  # the overview lists what waits
    admin.shot("admin-overview")
    page = admin.go(f"/admin/orders?status=PENDING&customer={buyer.id}")
    admin.shot("admin-orders-manual")
    page.locator(f"#order-{to_match}").get_by_role("button", name="Match").click()
    what = f"{to_match[:8]} (BUY 2 AAPL at {cash(limit)} TRY, for {buyer.username})"
    admin.confirm(f"Match order {what}")
    expect(page.locator(".notice")).to_have_text(f"Order {what} matched.")

    expect(customer.page.locator("#order-status")).to_have_attribute("data-status", "MATCHED")
    assert customer.page.evaluate("window.stillTheSamePage") is True  # changed on screen, no reload

    price = executed_price(manual, boss, to_match)  # the ask when the admin matched it
    assert price <= Decimal(limit)
    left = 1000 - 2 * price
    expected = {"TRY": (left, left), "AAPL": (Decimal(2), Decimal(2))}
    assert manual.wait_balances(boss, buyer, expected) == expected
    sell = manual.resting(buyer, "SELL")
    to_cancel = manual.place(buyer, "SELL", "AAPL", "1", sell)
    _reserved(manual, buyer, to_cancel)
    page = admin.go(f"/orders/{to_cancel}")
    page.get_by_role("button", name="Cancel order").click()
    admin.confirm()
    expect(page.locator(".notice")).to_contain_text(f"Order {to_cancel[:8]} (SELL 1 AAPL at {cash(sell)} TRY")
    expect(page.locator("#order-status")).to_have_attribute("data-status", "CANCELED")
    expect(page.locator("#order-reason")).to_have_text("Reason: canceled by admin")
    page = customer.go("/orders")
    expect(page.locator(f"#order-{to_cancel}")).to_contain_text("canceled by admin")
    expect(page.locator(f"#order-{to_match}")).to_have_attribute("data-status", "MATCHED")
    customer.go("/")
    expect(customer.cell("TRY", "total")).to_have_text(cash(left))
    expect(customer.cell("AAPL", "total")).to_have_text("2")
    for person in (customer, admin):
        person.close()


IBAN = "TR33 0006 1005 1978 6457 8413 26"


def test_customer_requests_a_deposit_and_sees_an_admin_approve_or_reject_it(
    browser: Browser, api: Api
) -> None:
    me = api.customer()
    customer = desk(browser, api)
    customer.sign_in(me.username, "password-1")
    customer.page.get_by_role("link", name="Deposit or withdraw").click()
    expect(customer.page).to_have_url(re.compile(r"/money$"))
    customer.page.locator("#deposit-amount").fill("750.25")
    customer.page.get_by_role("button", name="Review deposit request").click()
    customer.confirm("Request a deposit of 750.25 TRY")
    expect(customer.page.locator(".notice")).to_contain_text("once an admin approves it")
    waiting = customer.page.locator("#deposits tbody tr").first
    expect(waiting).to_have_attribute("data-status", "REQUESTED")
    expect(waiting.locator(".decided")).to_have_text("waiting for an admin")
    customer.shot("customer-money-requested")
    request_id = (waiting.get_attribute("id") or "").removeprefix("deposit-")
    expect(customer.go("/").locator("#no-balances")).to_be_visible()  # nothing credited yet

    admin = desk(browser, api)
    admin.sign_in("boss", "boss-password")
    expect(admin.page.locator("#requests-waiting")).not_to_contain_text("(0)")
    admin.page.locator("#requests-waiting").click()
    row = admin.page.locator(f"#deposit-{request_id}")
    expect(row).to_contain_text(me.username)
    admin.shot("admin-requests")
    row.get_by_role("button", name="Approve").click()
    admin.confirm(f"Approve the deposit of 750.25 TRY for {me.username}")
    expect(admin.page.locator(".notice")).to_contain_text(
        f"Approved the deposit of 750.25 TRY for {me.username}"
    )
    expect(admin.page.locator(f"#decided-{request_id}")).to_contain_text("boss")

    page = customer.go("/money")
    expect(page.locator(f"#deposit-{request_id}")).to_have_attribute("data-status", "APPROVED")
    expect(page.locator(f"#deposit-{request_id} .decided")).to_contain_text("an admin, ")
    customer.go("/")
    expect(customer.cell("TRY", "total")).to_have_text("750.25")

    customer.go("/money").locator("#deposit-amount").fill("99")
    customer.page.get_by_role("button", name="Review deposit request").click()
    customer.confirm()
    second = customer.page.locator("#deposits tbody tr").first
    second_id = (second.get_attribute("id") or "").removeprefix("deposit-")
    admin.go("/admin/money").locator(f"#deposit-{second_id}").get_by_role("button", name="Reject").click()
    admin.confirm()
    expect(admin.page.locator(".notice")).to_contain_text("Rejected the deposit of 99.00 TRY")
    expect(customer.go("/money").locator(f"#deposit-{second_id}")).to_have_attribute(
        "data-status", "REJECTED"
    )
    customer.shot("customer-money-decided")
    customer.go("/")
    expect(customer.cell("TRY", "total")).to_have_text("750.25")
    for person in (customer, admin):
        person.close()


def test_large_withdrawals_are_held_and_approved_by_another_admin(browser: Browser, api: Api) -> None:
    boss, other_admin, me = api.admin(), api.new_admin(), api.customer()
    assert api.deposit(boss, me, "TRY", "120000").status_code == 200
    customer = desk(browser, api)
    customer.sign_in(me.username, "password-1")
    page = customer.go("/money")
    page.locator("#withdraw-amount").fill("60000")
    page.locator("#withdraw-iban").fill("TR00 0000 0000 0000 0000 0000 00")
    page.get_by_role("button", name="Review withdrawal").click()
    customer.confirm()
    expect(page.locator("#withdrawal-problem")).to_be_visible()  # the service checks the IBAN
    page.locator("#withdraw-iban").fill(IBAN)
    page.get_by_role("button", name="Review withdrawal").click()
    customer.confirm(f"Withdraw 60,000.00 TRY for {me.username}")
    expect(page.locator(".notice")).to_contain_text("held until an admin approves it")
    mine = page.locator("#withdrawals tbody tr").first
    expect(mine).to_have_attribute("data-status", "REQUESTED")
    expect(mine.locator(".decided")).to_contain_text("the amount is held")
    expect(page.locator("#usable-cash")).to_have_text("Usable: 60,000.00 TRY")
    customer_request = (mine.get_attribute("id") or "").removeprefix("withdrawal-")
    customer.shot("customer-withdrawal-held")

    admin = desk(browser, api)
    admin.sign_in("boss", "boss-password")
    page = admin.go(f"/admin/customers/{me.id}")
    page.locator("#withdraw-amount").fill("55000.5")
    page.locator("#withdraw-iban").fill(IBAN)
    page.get_by_role("button", name="Review withdrawal").click()
    admin.confirm()
    expect(page.locator(".notice")).to_contain_text("held until an admin approves it")
    asked_by_boss = page.locator("#withdrawals tbody tr").first
    expect(asked_by_boss.locator(".asked-by")).to_have_text("you")
    expect(asked_by_boss.locator(".four-eyes")).to_have_text("Asked by you: another admin approves")
    expect(asked_by_boss.get_by_role("button", name="Approve")).to_have_count(0)
    expect(admin.cell("TRY", "usable")).to_have_text("4,999.50")
    admin.shot("admin-four-eyes")
    boss_request = (asked_by_boss.get_attribute("id") or "").removeprefix("withdrawal-")
    assert (
        api.decide(boss, "withdrawal", boss_request, "approve").status_code == 403
    )  # not through the page either

    second = desk(browser, api)
    second.sign_in(other_admin.username, "password-1")
    page = second.go("/admin/money")
    for request_id in (boss_request, customer_request):
        page.locator(f"#withdrawal-{request_id}").get_by_role("button", name="Approve").click()
        second.confirm()
        expect(page.locator(".notice")).to_contain_text("Approved the withdrawal of")
        expect(page.locator(f"#decided-{request_id}")).to_contain_text(other_admin.username)
    second.shot("admin-withdrawals-approved")

    page = customer.go("/money")
    expect(page.locator(f"#withdrawal-{customer_request}")).to_have_attribute("data-status", "PAID")
    expect(page.locator(f"#withdrawal-{boss_request} .asked-by")).to_have_text("an admin")
    customer.go("/")
    expect(customer.cell("TRY", "total")).to_have_text("4,999.50")
    expect(customer.cell("TRY", "reserved")).to_have_text("0.00")
    for person in (customer, admin, second):
        person.close()


def _csrf_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


REFUSED = "did not come from this site"


def test_posts_without_the_sessions_csrf_token_are_refused(api: Api) -> None:
    base = api.system.url("backoffice")
    with httpx.Client(base_url=base) as stranger:
        refused = stranger.post("/login", data={"username": "boss", "password": "boss-password"})
        assert (refused.status_code, REFUSED in refused.text) == (403, True)
        other_sessions_token = _csrf_token(stranger.get("/login").text)
    with httpx.Client(base_url=base) as http:
        token = _csrf_token(http.get("/login").text)
        signed_in = http.post(
            "/login", data={"username": "boss", "password": "boss-password", "csrf_token": token}
        )
        assert signed_in.status_code == 303
        cookie = next(c for c in signed_in.headers.get_list("set-cookie") if c.startswith("oms_session="))
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert "eyJhbGciOi" not in cookie  # the token is encrypted in the cookie, not a readable JWT
        page = http.get("/admin/users")
        assert page.status_code == 200 and "eyJhbGciOi" not in page.text
        token = _csrf_token(page.text)
        some = uuid.uuid4()
        for path in (
            "/login",
            "/register",
            "/logout",
            "/trade",
            f"/orders/{some}/cancel",
            "/admin/users",
            f"/admin/customers/{some}/deposit",
            f"/admin/customers/{some}/withdraw",
            f"/admin/requests/deposit/{some}/approve",
            f"/admin/requests/withdrawal/{some}/reject",
            "/money/deposit",
            "/money/withdraw",
            f"/admin/orders/{some}/match",
            "/admin/system/audit",
            "/admin/system/dead-letters/order/1/replay",
        ):
            for form in ({}, {"csrf_token": "forged"}, {"csrf_token": other_sessions_token}):
                response = http.post(path, data=form)
                assert (response.status_code, REFUSED in response.text) == (403, True), (path, form)
        with_token = http.post("/admin/users", data={"csrf_token": token, "username": "", "password": ""})
        assert with_token.status_code == 422 and "Enter a username." in with_token.text
        assert http.post("/trade", headers={"X-CSRF-Token": token}).status_code != 403  # htmx sends a header
        assert http.get("/admin/users").status_code == 200  # the refusals changed nothing


def test_ops_endpoints_are_for_admins_and_describe_their_own_service(api: Api) -> None:
    admin, customer = api.admin(), api.customer()
    for service in ("order", "account"):
        for path in ("/api/v1/ops/status", "/api/v1/ops/dead-letters"):
            assert api.http.get(api.url(service, path), headers=customer.headers).status_code == 403
        replay = api.http.post(
            api.url(service, "/api/v1/ops/dead-letters/1/replay"), headers=customer.headers
        )
        assert replay.status_code == 403
        status = api.http.get(api.url(service, "/api/v1/ops/status"), headers=admin.headers).json()
        assert status["service"] == service
        assert status["relay"]["slot"] == f"oms_{service}_outbox" and status["relay"]["slotExists"]
        assert status["consumer"]["name"] == service
        assert {"pending", "ackPending", "redelivered", "waiting"} <= set(status["consumer"])
        missing = api.http.post(
            api.url(service, "/api/v1/ops/dead-letters/999999/replay"), headers=admin.headers
        )
        assert missing.status_code == 404


def test_the_system_pages_audit_runs_with_the_read_only_role(api: Api) -> None:
    """The back office is given only the audit role's URLs (see test_up); its Run audit works with them."""
    with httpx.Client(base_url=api.system.url("backoffice")) as http:
        token = _csrf_token(http.get("/login").text)
        http.post("/login", data={"username": "boss", "password": "boss-password", "csrf_token": token})
        token = _csrf_token(http.get("/admin/system").text)
        assert http.post("/admin/system/audit", data={"csrf_token": token}).status_code == 303
        page = http.get("/admin/system").text
    assert 'id="audit-result" data-clean="true"' in page and "Every invariant holds" in page


def _record_unless_from(base: str, elsewhere: list[str], request: Request) -> None:
    if not request.url.startswith(base):
        elsewhere.append(request.url)


def test_every_services_api_docs_render_offline_from_its_own_assets(browser: Browser, api: Api) -> None:
    """`/docs` of each service: Swagger UI from the service itself (no CDN: this browser reaches nothing
    else), its operations listed; on the back office too, under its Content-Security-Policy."""
    for component in ("auth", "order", "account", "backoffice"):
        base = api.system.url(component)
        elsewhere: list[str] = []
        page = browser.new_page()
        page.on("request", partial(_record_unless_from, base, elsewhere))
        try:
            page.goto(f"{base}/docs")
            expect(page.locator(".opblock").first).to_be_visible(timeout=15_000)
        finally:
            page.close()
        assert elsewhere == [], component
