"""A small client of the running system for tests: users, deposits, orders, waiting for outcomes."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import httpx

from tests.e2e.conftest import RunningSystem

CENT = Decimal("0.01")  # the tick of the listed US equities


def exact(response: httpx.Response) -> Any:
    """The JSON body with numbers as exact Decimals (never through float)."""
    return json.loads(response.text, parse_float=Decimal, parse_int=Decimal)


def is_terminal(order: dict[str, Any]) -> bool:
    return order["status"] in {"MATCHED", "CANCELED"}


@dataclass
class User:
    id: str
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Api:
    def __init__(self, system: RunningSystem) -> None:
        self.system = system
        self.http = httpx.Client(timeout=30)

    def url(self, component: str, path: str) -> str:
        return f"{self.system.url(component)}{path}"

    def login(self, username: str, password: str) -> str:
        response = self.http.post(
            self.url("auth", "/login"), json={"username": username, "password": password}
        )
        response.raise_for_status()
        token: str = response.json()["token"]
        return token

    def admin(self) -> User:
        token = self.login("boss", "boss-password")
        users = self.http.get(self.url("auth", "/users"), headers={"Authorization": f"Bearer {token}"})
        boss = next(u for u in users.json()["users"] if u["username"] == "boss")
        return User(boss["id"], "boss", token)

    def customer(self) -> User:
        name = f"c-{uuid.uuid4().hex[:10]}"
        created = self.http.post(
            self.url("auth", "/register"), json={"username": name, "password": "password-1"}
        )
        created.raise_for_status()
        return User(created.json()["id"], name, self.login(name, "password-1"))

    def new_admin(self) -> User:
        """Another admin (created by the first), signed in."""
        name = f"a-{uuid.uuid4().hex[:10]}"
        body = {"username": name, "password": "password-1", "role": "admin"}
        created = self.call("POST", "auth", "/register", by=self.admin(), json=body)
        created.raise_for_status()
        return User(created.json()["id"], name, self.login(name, "password-1"))

    def deposit(self, by: User, customer: User, asset: str, total: Any, usable: Any = None) -> httpx.Response:
        body = {
            "customerId": customer.id,
            "assetName": asset,
            "totalSize": total,
            "usableSize": usable or total,
        }
        return self.http.post(self.url("account", "/api/v1/assets"), json=body, headers=by.headers)

    def order(self, by: User, customer: User, side: str, asset: str, size: Any, price: Any) -> httpx.Response:
        body = {
            "customerId": customer.id,
            "assetName": asset,
            "orderSide": side,
            "size": size,
            "price": price,
        }
        return self.http.post(self.url("order", "/api/v1/orders"), json=body, headers=by.headers)

    def place(self, customer: User, side: str, asset: str, size: Any, price: Any) -> str:
        response = self.order(customer, customer, side, asset, size, price)
        assert response.status_code == 200, response.text
        order_id: str = response.json()["id"]
        return order_id

    def quote(self, by: User, symbol: str = "AAPL") -> dict[str, Decimal]:
        """The latest quote of `symbol` (bid, ask, last as Decimals), once there is one."""
        deadline = time.monotonic() + 20
        while True:
            answer = self.http.get(
                self.url("market", "/api/v1/quotes"), params={"symbol": symbol}, headers=by.headers
            )
            quotes: list[dict[str, Any]] = exact(answer)["quotes"]
            if quotes:
                prices = ("bid", "ask", "last")
                return {k: Decimal(str(v)) if k in prices else v for k, v in quotes[0].items()}
            assert time.monotonic() < deadline, f"no quote of {symbol} within 20 s"
            time.sleep(0.1)

    def marketable(self, by: User, side: str, symbol: str = "AAPL") -> str:
        """A LIMIT price that crosses `symbol`'s quote with room to spare (3 % beyond it, well inside the
        band, on the cent grid): a BUY at it executes at once in any mode."""
        now = self.quote(by, symbol)
        if side == "BUY":
            return str((now["ask"] * Decimal("1.03")).quantize(CENT, ROUND_CEILING))
        return str((now["bid"] * Decimal("0.97")).quantize(CENT, ROUND_FLOOR))

    def resting(self, by: User, side: str, symbol: str = "AAPL") -> str:
        """A LIMIT price that the market will not cross for a long while (8 % away, inside the band)."""
        now = self.quote(by, symbol)
        if side == "BUY":
            return str((now["last"] * Decimal("0.92")).quantize(CENT, ROUND_CEILING))
        return str((now["last"] * Decimal("1.08")).quantize(CENT, ROUND_FLOOR))

    def get_order(self, by: User, order_id: str) -> httpx.Response:
        return self.http.get(self.url("order", f"/api/v1/orders/{order_id}"), headers=by.headers)

    def wait_order(
        self,
        by: User,
        order_id: str,
        *,
        until: Callable[[dict[str, Any]], bool] = is_terminal,
        timeout: float = 20,
    ) -> dict[str, Any]:
        """The order once `until(order)` holds (default: terminal), or as it is at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            order: dict[str, Any] = self.get_order(by, order_id).json()
            if until(order) or time.monotonic() > deadline:
                return order
            time.sleep(0.05)

    def balances(self, by: User, customer: User) -> dict[str, tuple[Decimal, Decimal]]:
        response = self.http.get(
            self.url("account", "/api/v1/assets"), params={"customerId": customer.id}, headers=by.headers
        )
        response.raise_for_status()
        return {
            a["assetName"]: (Decimal(a["totalSize"]), Decimal(a["usableSize"]))
            for a in exact(response)["assets"]
        }

    def wait_balances(
        self, by: User, customer: User, expected: dict[str, tuple[Any, Any]], timeout: float = 20
    ) -> dict[str, tuple[Decimal, Decimal]]:
        """The balances once they equal `expected` (or whatever they are at the timeout)."""
        want = {k: (Decimal(str(t)), Decimal(str(u))) for k, (t, u) in expected.items()}
        deadline = time.monotonic() + timeout
        while True:
            got = self.balances(by, customer)
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    # --- added for the authorization, crash and dead-letter tests ------------------------------------------

    def call(
        self,
        method: str,
        component: str,
        path: str,
        *,
        by: User | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Any request to `component`, as `by` (its bearer token) or with `headers` (none, or a bad token)."""
        sent = {**(by.headers if by else {}), **(headers or {})}
        return self.http.request(method, self.url(component, path), headers=sent, **kwargs)

    def cancel(self, by: User, order_id: str) -> httpx.Response:
        return self.call("DELETE", "order", "/api/v1/orders", by=by, params={"orderId": order_id})

    def match(self, by: User, order_id: str) -> httpx.Response:
        return self.call("POST", "order", f"/api/v1/orders/{order_id}/match", by=by)

    def orders_of(self, by: User, customer: User) -> list[dict[str, Any]]:
        """Every order of `customer`, newest first, through all pages (numbers as exact Decimals)."""
        orders: list[dict[str, Any]] = []
        params: dict[str, Any] = {"customerId": customer.id, "limit": 1000}
        while True:
            response = self.call("GET", "order", "/api/v1/orders", by=by, params=params)
            response.raise_for_status()
            page = exact(response)
            orders += page["orders"]
            if not page["nextCursor"]:
                return orders
            params["cursor"] = page["nextCursor"]

    def ledger_of(self, by: User, customer: User) -> list[dict[str, Any]]:
        """Every ledger entry of `customer`, newest first, through all pages (exact Decimals)."""
        entries: list[dict[str, Any]] = []
        params: dict[str, Any] = {"customerId": customer.id, "limit": 1000}
        while True:
            response = self.call("GET", "account", "/api/v1/ledger", by=by, params=params)
            response.raise_for_status()
            page = exact(response)
            entries += page["entries"]
            if not page["nextCursor"]:
                return entries
            params["cursor"] = str(page["nextCursor"])

    # --- deposit and withdrawal requests --------------------------------------------------------------------

    def withdraw(
        self, by: User, customer: User, amount: Any, iban: str, key: str | None = None
    ) -> httpx.Response:
        body = {"customerId": customer.id, "amount": amount, "iban": iban}
        headers = {"Idempotency-Key": key} if key else {}
        return self.call("POST", "account", "/api/v1/assets/withdraw", by=by, json=body, headers=headers)

    def decide(
        self, by: User, kind: str, request_id: str, verdict: str, key: str | None = None
    ) -> httpx.Response:
        """`verdict` (approve or reject) on a deposit or withdrawal request (`kind`)."""
        headers = {"Idempotency-Key": key} if key else {}
        return self.call("POST", "account", f"/api/v1/{kind}s/{request_id}/{verdict}", by=by, headers=headers)

    def requests_of(
        self, by: User, kind: str, customer: User | None = None, **params: str
    ) -> list[dict[str, Any]]:
        """The deposits or withdrawals (`kind`) `by` may see, newest first (exact Decimals)."""
        if customer is not None:
            params["customerId"] = customer.id
        response = self.call("GET", "account", f"/api/v1/{kind}s", by=by, params=params)
        response.raise_for_status()
        found: list[dict[str, Any]] = exact(response)[f"{kind}s"]
        return found
