"""A small async client of the system's HTTP APIs, shared by the bench and the chaos suite."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from oms.bench.http import HTTPClient, Response
from oms.bench.system import Target


@dataclass(frozen=True)
class Principal:
    """Someone who calls the APIs: their user id and bearer token."""

    id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def token_subject(token: str) -> str:
    """The `sub` claim of a token (read, not verified: the services verify it)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


def exact(response: Response) -> Any:
    """The JSON body with numbers as exact Decimals."""
    return json.loads(response.text, parse_float=Decimal, parse_int=Decimal)


class Client:
    """The three APIs of one system, over up to `connections` keep-alive connections per service.

    It speaks HTTP through `oms.bench.http`, a lean client of our own: httpx cost the load generator
    ~1.1 ms of CPU per request, CPU the measured system needed. Transport failures raise
    `oms.bench.http.TransportError`; a request is never re-sent by the client itself.
    """

    def __init__(self, target: Target, *, connections: int = 100, timeout: float = 30.0) -> None:
        self.target = target
        self.connections = connections
        self.timeout = timeout
        self._http = HTTPClient(connections=connections, timeout=timeout)

    async def close(self) -> None:
        """Close every connection."""
        await self._http.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One request; `json` is sent as the JSON body, `params` as the query string."""
        return await self._http.request(method, url, json=json, params=params, headers=headers)

    def url(self, component: str, path: str) -> str:
        return f"{self.target.urls[component]}{path}"

    async def login(self, username: str, password: str) -> Principal:
        response = await self.request(
            "POST", self.url("auth", "/login"), json={"username": username, "password": password}
        )
        response.raise_for_status()
        token: str = response.json()["token"]
        return Principal(token_subject(token), token)

    async def admin(self) -> Principal:
        return await self.login(*self.target.admin)

    async def register_customers(self, count: int, by: Principal, prefix: str = "bench") -> list[Principal]:
        """`count` new customers created by the admin `by` (self-registration is limited per address), each
        logged in (argon2 makes this ~0.1 s of CPU per customer)."""
        slots = asyncio.Semaphore(4)

        async def one() -> Principal:
            name, password = f"{prefix}-{uuid.uuid4().hex[:12]}", "bench-password-1"
            async with slots:
                created = await self.request(
                    "POST",
                    self.url("auth", "/register"),
                    json={"username": name, "password": password},
                    headers=by.headers,
                )
                created.raise_for_status()
                return await self.login(name, password)

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def register_admin(self, by: Principal, prefix: str = "bench-admin") -> Principal:
        """Another admin, created by `by` (an admin), logged in."""
        name, password = f"{prefix}-{uuid.uuid4().hex[:12]}", "bench-password-1"
        body = {"username": name, "password": password, "role": "admin"}
        created = await self.request("POST", self.url("auth", "/register"), json=body, headers=by.headers)
        created.raise_for_status()
        return await self.login(name, password)

    async def deposit(
        self, by: Principal, customer_id: str, asset: str, amount: Decimal | str, key: str | None = None
    ) -> Response:
        body = {
            "customerId": customer_id,
            "assetName": asset,
            "totalSize": str(amount),
            "usableSize": str(amount),
        }
        return await self.request(
            "POST", self.url("account", "/api/v1/assets"), json=body, headers=_with(by, key)
        )

    async def withdraw(
        self, by: Principal, customer_id: str, amount: Decimal | str, iban: str, key: str | None = None
    ) -> Response:
        body = {"customerId": customer_id, "amount": str(amount), "iban": iban}
        return await self.request(
            "POST", self.url("account", "/api/v1/assets/withdraw"), json=body, headers=_with(by, key)
        )

    async def decide(
        self, by: Principal, kind: str, request_id: str, verdict: str, key: str | None = None
    ) -> Response:
        """An admin's `verdict` (approve or reject) on a deposit or withdrawal request (`kind`)."""
        path = f"/api/v1/{kind}s/{request_id}/{verdict}"
        return await self.request("POST", self.url("account", path), headers=_with(by, key))

    async def create_order(
        self,
        by: Principal,
        customer_id: str,
        side: str,
        asset: str,
        size: Decimal | str,
        price: Decimal | str | None,
        key: str | None = None,
    ) -> Response:
        """A LIMIT order at `price`, or with `price` None a MARKET order."""
        body = {
            "customerId": customer_id,
            "assetName": asset,
            "orderSide": side,
            "size": str(size),
            "price": None if price is None else str(price),
            "orderType": "LIMIT" if price is not None else "MARKET",
        }
        return await self.request(
            "POST", self.url("order", "/api/v1/orders"), json=body, headers=_with(by, key)
        )

    async def cancel_order(self, by: Principal, order_id: str) -> Response:
        return await self.request(
            "DELETE", self.url("order", "/api/v1/orders"), params={"orderId": order_id}, headers=by.headers
        )

    async def list_orders(self, by: Principal, **params: Any) -> Response:
        return await self.request(
            "GET", self.url("order", "/api/v1/orders"), params=params, headers=by.headers
        )

    async def instruments(self, by: Principal) -> list[dict[str, Any]]:
        """The market's listed instruments, numbers as exact Decimals."""
        response = await self.request("GET", self.url("market", "/api/v1/instruments"), headers=by.headers)
        response.raise_for_status()
        listed: list[dict[str, Any]] = exact(response)["instruments"]
        return listed

    async def quotes(self, by: Principal, symbols: list[str] | None = None) -> list[dict[str, Any]]:
        """The latest quote of each symbol (or of `symbols`), numbers as exact Decimals."""
        query = "&".join(f"symbol={s}" for s in symbols or [])
        url = self.url("market", "/api/v1/quotes") + (f"?{query}" if query else "")
        response = await self.request("GET", url, headers=by.headers)
        response.raise_for_status()
        quotes: list[dict[str, Any]] = exact(response)["quotes"]
        return quotes

    async def all_orders(self, by: Principal, customer_id: str) -> list[dict[str, Any]]:
        """Every order of a customer, through the paged list API."""
        orders: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"customerId": customer_id, "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            response = await self.list_orders(by, **params)
            response.raise_for_status()
            page = exact(response)
            orders += page["orders"]
            cursor = page["nextCursor"]
            if not cursor:
                return orders


def _with(by: Principal, key: str | None) -> dict[str, str]:
    return {**by.headers, "Idempotency-Key": key} if key else by.headers
