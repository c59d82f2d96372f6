"""The services' HTTP APIs, called with the signed-in user's token: the back office holds no data of
its own and decides nothing the services would not decide for that user."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx

from oms.backoffice.broker import BrokerHealth
from oms.backoffice.models import (
    Balance,
    Count,
    Cursor,
    Health,
    LedgerEntry,
    LedgerPage,
    MoneyRequest,
    Order,
    OrderFilter,
    OrderPage,
    RequestPage,
    TrailEntry,
    TrailPage,
    UserRecord,
)
from oms.kernel import client_address
from oms.kernel.market import Instrument
from oms.kernel.settings import Settings

OPERATED = ("order", "account")
STREAM_SILENCE = 45.0  # seconds without a byte after which a service's event stream is taken for lost
NAMES_TTL = (
    5.0  # seconds the id → username map is reused  # the services with a relay, a consumer and dead letters
)


class ServiceError(Exception):
    """A service refused the request (its message is meant for the user) or could not be reached."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


def _body(response: httpx.Response) -> Any:
    return json.loads(response.text, parse_float=Decimal) if response.content else None


def _refusal(service: str, response: httpx.Response) -> ServiceError:
    try:
        body = _body(response)
        message, detail = str(body["error"]), body.get("detail")
    except (ValueError, KeyError, TypeError):
        message, detail = f"the {service} service answered {response.status_code}", None
    if isinstance(detail, list) and detail and all(isinstance(d, dict) for d in detail):
        message = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in detail)  # 422 field errors
    return ServiceError(response.status_code, message, detail)


class Services:
    def __init__(self, http: httpx.AsyncClient, settings: Settings, client_address_key: bytes) -> None:
        self.http = http
        self._client_address_key = client_address_key
        self.urls = {
            "auth": settings.auth_url.rstrip("/"),
            "order": settings.order_url.rstrip("/"),
            "account": settings.account_url.rstrip("/"),
            "market": settings.market_url.rstrip("/"),
        }
        self.broker = BrokerHealth(settings)
        self._names: tuple[dict[str, str], float] = ({}, float("-inf"))

    async def _call(
        self, method: str, service: str, path: str, token: str | None = None, **kwargs: Any
    ) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = await self.http.request(
                method, f"{self.urls[service]}{path}", headers=headers, **kwargs
            )
        except httpx.HTTPError as exc:
            raise ServiceError(
                503, f"the {service} service cannot be reached ({type(exc).__name__})"
            ) from None
        if not response.is_success:
            raise _refusal(service, response)
        return _body(response)

    # -- auth ---------------------------------------------------------------------------------------
    def _from(self, address: str) -> dict[str, str]:
        """Tells auth the browser's address (signed: auth believes it from the back office only)."""
        return {client_address.HEADER: client_address.vouch(self._client_address_key, address, time.time())}

    async def login(self, username: str, password: str, address: str) -> str:
        """A token for that user, asked on behalf of the browser at `address` (auth throttles by it)."""
        body = {"username": username, "password": password}
        answer = await self._call("POST", "auth", "/login", json=body, headers=self._from(address))
        token: str = answer["token"]
        return token

    async def logout(self, token: str) -> None:
        """Revoke the token at auth: every service and back-office replica refuses it from then on."""
        await self._call("POST", "auth", "/logout", token)

    async def register(
        self, username: str, password: str, role: str, token: str | None = None, *, address: str = ""
    ) -> str:
        """Create a user: by an admin (`token`), or by the visitor at `address` (limited per address)."""
        body = {"username": username, "password": password, "role": role}
        headers = self._from(address) if address else {}
        answer = await self._call("POST", "auth", "/register", token, json=body, headers=headers)
        return str(answer["id"])

    async def users(self, token: str) -> list[UserRecord]:
        """Every user (admins only)."""
        answer = await self._call("GET", "auth", "/users", token)
        users = [UserRecord.of(u) for u in answer["users"]]
        self._names = ({u.id: u.username for u in users}, time.monotonic())
        return users

    async def usernames(self, token: str) -> dict[str, str]:
        """User id → username (admins only), fetched at most every few seconds: order rows refreshed by
        the browser every second or two must not each list every user."""
        names, fetched_at = self._names
        if time.monotonic() - fetched_at > NAMES_TTL:
            await self.users(token)
            names = self._names[0]
        return names

    def forget_usernames(self) -> None:
        self._names = ({}, float("-inf"))

    async def set_password(self, token: str, user_id: str, password: str) -> None:
        await self._call("POST", "auth", f"/users/{user_id}/password", token, json={"newPassword": password})

    async def set_disabled(self, token: str, user_id: str, disabled: bool) -> None:
        verb = "disable" if disabled else "enable"
        await self._call("POST", "auth", f"/users/{user_id}/{verb}", token)
        self.forget_usernames()

    async def add_to_trail(self, token: str, entry: dict[str, str]) -> None:
        """Add the signed-in admin's action to the admin trail (auth takes the actor from the token)."""
        await self._call("POST", "auth", "/admin-trail", token, json=entry)

    async def trail(self, token: str, where: dict[str, str], *, limit: int, cursor: Cursor) -> TrailPage:
        params = {**where, "limit": str(limit), **cursor.params()}
        answer = await self._call("GET", "auth", "/admin-trail", token, params=params)
        return TrailPage(
            [TrailEntry.of(e) for e in answer["entries"]], answer.get("nextCursor"), answer.get("prevCursor")
        )

    async def count(self, token: str, service: str, path: str, params: dict[str, str]) -> Count:
        """A list's bounded count (`path` of `service`, with the list's filters)."""
        answer = await self._call("GET", service, path, token, params=params)
        return Count(int(answer["count"]), bool(answer["atLeast"]))

    # -- account ------------------------------------------------------------------------------------
    async def balances(self, token: str, customer_id: str | None = None) -> list[Balance]:
        params = {"customerId": customer_id} if customer_id else {}
        answer = await self._call("GET", "account", "/api/v1/assets", token, params=params)
        return [Balance.of(a) for a in answer["assets"]]

    async def _list(
        self, token: str, service: str, path: str, where: dict[str, str], limit: int, cursor: Cursor
    ) -> Any:
        params = {**where, "limit": str(limit), **cursor.params()}
        return await self._call("GET", service, path, token, params=params)

    async def ledger(
        self, token: str, where: dict[str, str], *, limit: int = 50, cursor: Cursor = Cursor()
    ) -> LedgerPage:
        """Balance movements (`where`: `ledger_filter`), newest first, each with the balance after it."""
        answer = await self._list(token, "account", "/api/v1/ledger", where, limit, cursor)
        entries = [LedgerEntry.of(e) for e in answer["entries"]]
        return LedgerPage(entries, answer.get("nextCursor"), answer.get("prevCursor"))

    async def deposit(
        self, token: str, customer_id: str, asset: str, amount: Decimal, key: str
    ) -> tuple[str, str]:
        """Deposit: its id and status, REQUESTED (waits for an admin) or APPROVED (credited at once)."""
        body = {
            "customerId": customer_id,
            "assetName": asset,
            "totalSize": str(amount),
            "usableSize": str(amount),
        }
        headers = {"Idempotency-Key": key}
        answer = await self._call("POST", "account", "/api/v1/assets", token, json=body, headers=headers)
        return str(answer["id"]), str(answer.get("status", "APPROVED"))

    async def withdraw(
        self, token: str, customer_id: str, amount: Decimal, iban: str, key: str
    ) -> tuple[str, str]:
        """Withdraw TRY: its id and status, PAID at once or REQUESTED (held until an admin decides)."""
        body = {"customerId": customer_id, "amount": str(amount), "iban": iban}
        headers = {"Idempotency-Key": key}
        answer = await self._call(
            "POST", "account", "/api/v1/assets/withdraw", token, json=body, headers=headers
        )
        return str(answer["id"]), str(answer["status"])

    async def money_requests(
        self,
        token: str,
        kind: str,
        *,
        limit: int = 50,
        status: str | None = None,
        customer_id: str | None = None,
    ) -> list[MoneyRequest]:
        """Deposits or withdrawals (`kind`), newest first: the customer's own, or (admins) anyone's."""
        page = await self.money_request_page(token, kind, request_filter(customer_id, status), limit=limit)
        return page.requests

    async def money_request_page(
        self, token: str, kind: str, where: dict[str, str], *, limit: int = 50, cursor: Cursor = Cursor()
    ) -> RequestPage:
        """A page of deposits or withdrawals (`kind`; `where`: `request_filter`), newest first."""
        answer = await self._list(token, "account", f"/api/v1/{kind}s", where, limit, cursor)
        found = [MoneyRequest.of(kind, r) for r in answer[f"{kind}s"]]
        return RequestPage(found, answer.get("nextCursor"), answer.get("prevCursor"))

    async def decide(self, token: str, kind: str, request_id: str, verdict: str) -> None:
        """An admin's `verdict` (approve or reject) on a deposit or withdrawal request."""
        await self._call("POST", "account", f"/api/v1/{kind}s/{request_id}/{verdict}", token)

    # -- orders -------------------------------------------------------------------------------------
    async def orders(
        self, token: str, where: OrderFilter, *, limit: int = 20, cursor: Cursor = Cursor()
    ) -> OrderPage:
        params = {**where.params(), "limit": str(limit), **cursor.params()}
        answer = await self._call("GET", "order", "/api/v1/orders", token, params=params)
        orders = [Order.of(o) for o in answer["orders"]]
        return OrderPage(orders, answer.get("nextCursor"), answer.get("prevCursor"))

    async def order(self, token: str, order_id: str) -> Order:
        return Order.of(await self._call("GET", "order", f"/api/v1/orders/{order_id}", token))

    async def place_order(self, token: str, body: dict[str, str], key: str) -> str:
        headers = {"Idempotency-Key": key}
        answer = await self._call("POST", "order", "/api/v1/orders", token, json=body, headers=headers)
        return str(answer["id"])

    async def cancel_order(self, token: str, order_id: str) -> None:
        await self._call("DELETE", "order", "/api/v1/orders", token, params={"orderId": order_id})

    async def match_order(self, token: str, order_id: str) -> None:
        await self._call("POST", "order", f"/api/v1/orders/{order_id}/match", token)

    @asynccontextmanager
    async def order_stream(self, token: str) -> AsyncIterator[AsyncIterator[str]]:
        """The lines of the order service's stream of this user's order changes (server-sent events);
        ServiceError when it cannot be opened. A silence longer than `STREAM_SILENCE` (the service sends a
        keep-alive every 15 s) ends it with httpx.ReadTimeout."""
        url = f"{self.urls['order']}/api/v1/orders/stream"
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        timeout = httpx.Timeout(10, read=STREAM_SILENCE)
        try:
            async with self.http.stream("GET", url, headers=headers, timeout=timeout) as response:
                if not response.is_success:
                    await response.aread()
                    raise _refusal("order", response)
                yield response.aiter_lines()
        except httpx.HTTPError as exc:
            raise ServiceError(503, f"the order stream broke off ({type(exc).__name__})") from None

    # -- market -------------------------------------------------------------------------------------
    async def instruments(self, token: str) -> list[Instrument]:
        answer = await self._call("GET", "market", "/api/v1/instruments", token)
        return [Instrument.model_validate(i) for i in answer["instruments"]]

    async def instrument(self, token: str, symbol: str) -> Instrument:
        answer = await self._call("GET", "market", f"/api/v1/instruments/{quote(symbol, safe='')}", token)
        return Instrument.model_validate(answer)

    async def change_instrument(self, token: str, symbol: str, body: dict[str, str]) -> None:
        """List a new instrument or change the fields in `body` (admins only)."""
        await self._call("PUT", "market", f"/api/v1/instruments/{quote(symbol, safe='')}", token, json=body)

    # -- operations ---------------------------------------------------------------------------------
    async def ops_status(self, token: str, service: str) -> dict[str, Any]:
        status: dict[str, Any] = await self._call("GET", service, "/api/v1/ops/status", token)
        return status

    async def dead_letters(self, token: str, service: str) -> list[dict[str, Any]]:
        answer = await self._call("GET", service, "/api/v1/ops/dead-letters", token)
        letters: list[dict[str, Any]] = answer["deadLetters"]
        return letters

    async def replay(self, token: str, service: str, seq: int) -> None:
        await self._call("POST", service, f"/api/v1/ops/dead-letters/{seq}/replay", token)

    async def health(self, component: str) -> Health:
        """A service's /readyz, or whether JetStream answers the back office's broker identity."""
        if component == "nats":
            return await self.broker.check()
        try:
            response = await self.http.get(f"{self.urls[component]}/readyz", timeout=3)
        except httpx.HTTPError as exc:
            return Health(component, False, f"unreachable ({type(exc).__name__})")
        return Health(component, response.is_success, _health_detail(response))


def request_filter(customer_id: str | None, status: str | None = None) -> dict[str, str]:
    """The deposit and withdrawal lists' filters."""
    wanted = {"customerId": customer_id, "status": status}
    return {k: v for k, v in wanted.items() if v}


def ledger_filter(customer_id: str | None, asset: str | None) -> dict[str, str]:
    """The ledger API's filters."""
    wanted = {"customerId": customer_id, "assetName": asset}
    return {k: v for k, v in wanted.items() if v}


def _health_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    checks = body.get("checks") if isinstance(body, dict) else None
    if isinstance(checks, dict):
        return ", ".join(f"{name} {state}" for name, state in checks.items())
    if isinstance(body, dict) and body.get("status"):
        return str(body["status"])
    return f"HTTP {response.status_code}"
