"""A customer acts only on their own account (`oms.kernel.deps.own_customer`), over HTTP: the order and
account services' routes on real PostgreSQL, called with tokens their verifier accepts. Another customer's
id is refused with 403 and changes nothing; without an id, a customer sees only their own; an admin acts on
anyone.
(The end-to-end matrix, tests/e2e/test_authorization.py, covers every caller on the running system.)"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, FastAPI

from oms.account import api as account_api
from oms.account import requests_api
from oms.account.store import Accounts
from oms.auth.keys import SigningKey
from oms.kernel.db import create_pool, migrate
from oms.kernel.group_commit import GroupCommit
from oms.kernel.http import create_service_app
from oms.kernel.market import Instrument, MarketBoard
from oms.kernel.revocation import Revocations
from oms.kernel.settings import Settings
from oms.kernel.tokens import StaticKeys, TokenVerifier
from oms.kernel.unit_of_work import Stage, postgres_unit_of_work
from oms.order import api as order_api
from oms.order.handlers import place_orders
from oms.order.store import Orders

IBAN = "TR33 0006 1005 1978 6457 8413 26"


def _aapl_listed_at_10() -> MarketBoard:
    board = MarketBoard()
    board.list_instrument(
        Instrument(
            symbol="AAPL",
            name="Apple Inc.",
            tick_size=Decimal("0.01"),
            lot_size=Decimal(1),
            reference_price=Decimal(10),
        )
    )
    return board


@dataclass(frozen=True)
class Caller:
    id: str
    headers: dict[str, str]


@dataclass
class Services:
    order: httpx.AsyncClient
    account: httpx.AsyncClient
    order_pool: asyncpg.Pool
    account_pool: asyncpg.Pool
    admin: Caller
    owner: Caller  # whose account the refused requests name
    intruder: Caller  # another customer

    def client(self, service: str) -> httpx.AsyncClient:
        return self.order if service == "order" else self.account

    async def footprint(self) -> tuple[object, ...]:
        """Everything stored about anyone's orders, money and requests."""
        return (
            await self.order_pool.fetch("SELECT * FROM orders ORDER BY id"),
            await self.order_pool.fetchval("SELECT count(*) FROM outbox"),
            await self.account_pool.fetch("SELECT * FROM ledger ORDER BY seq"),
            await self.account_pool.fetchval("SELECT count(*) FROM outbox"),
        )


def caller(key: SigningKey, settings: Settings, role: str) -> Caller:
    user_id, now = str(uuid.uuid4()), int(time.time())
    token = key.sign(
        {
            "sub": user_id,
            "username": f"{role}-{user_id[:8]}",
            "role": role,
            "iat": now,
            "exp": now + 3600,
            "iss": settings.token_issuer,
            "aud": settings.token_audience,
            "jti": str(uuid.uuid4()),
        }
    )
    return Caller(user_id, {"Authorization": f"Bearer {token}"})


@asynccontextmanager
async def _nothing(_: FastAPI) -> AsyncIterator[None]:
    yield


def service_app(
    routers: list[APIRouter],
    pool: asyncpg.Pool,
    repository: Callable[[asyncpg.Connection, Stage], Any],
    settings: Settings,
    verifier: TokenVerifier,
) -> FastAPI:
    """A service's routes with what its composition root gives them (no broker: nothing here consumes)."""
    app = create_service_app(
        title="test", description="", lifespan=_nothing, routers=routers, health_checks=lambda _: {}
    )
    app.state.settings = settings
    app.state.token_verifier = verifier
    app.state.pool = pool
    app.state.unit_of_work = postgres_unit_of_work(pool, repository)
    return app


@pytest.fixture(scope="module")
async def services(make_database: Callable[[str], str]) -> AsyncIterator[Services]:
    settings = Settings()
    key = SigningKey(Ed25519PrivateKey.generate())
    verifier = TokenVerifier(
        StaticKeys(key.jwks), settings.token_issuer, settings.token_audience, Revocations.none_revoked()
    )
    pools = {}
    for service in ("order", "account"):
        url = make_database(f"own_customer_{service}")
        migrate(service, url)
        pools[service] = await create_pool(url, min_size=1, max_size=4)
    order = service_app([order_api.router], pools["order"], Orders, settings, verifier)
    order.state.placements = GroupCommit("place-orders", order.state.unit_of_work, place_orders)
    order.state.market = _aapl_listed_at_10()
    order.state.execution = None  # executed by nothing here: only who may place them is under test
    account = service_app(
        [account_api.router, requests_api.router], pools["account"], Accounts, settings, verifier
    )
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(order), base_url="http://order") as order_client,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(account), base_url="http://account"
        ) as account_client,
    ):
        admin, owner, intruder = (caller(key, settings, role) for role in ("admin", "customer", "customer"))
        yield Services(order_client, account_client, pools["order"], pools["account"], admin, owner, intruder)
    for pool in pools.values():
        await pool.close()


@pytest.fixture(scope="module")
async def owner_order(services: Services) -> str:
    """The owner's money (credited by an admin) and one of their orders."""
    owner = services.owner.id
    for asset, size in (("TRY", "1000"), ("AAPL", "10")):
        body = {"customerId": owner, "assetName": asset, "totalSize": size, "usableSize": size}
        credited = await services.account.post("/api/v1/assets", json=body, headers=services.admin.headers)
        assert credited.status_code == 200, credited.text
    body = {"customerId": owner, "assetName": "AAPL", "orderSide": "BUY", "size": "1", "price": "10"}
    placed = await answered(services.order.post("/api/v1/orders", json=body, headers=services.owner.headers))
    assert placed.status_code == 200, placed.text
    order_id: str = placed.json()["id"]
    return order_id


async def answered(sent: Awaitable[httpx.Response]) -> httpx.Response:
    """The answer, or a failure after 10 s (served in-process, a request has no client timeout)."""
    return await asyncio.wait_for(sent, 10)


@dataclass(frozen=True)
class Request:
    """A request naming `customerId`."""

    service: str
    method: str
    path: str
    body: Callable[[str], dict[str, Any]] | None = None  # the JSON body for a customer id, else a query

    async def send(
        self, client: httpx.AsyncClient, customer_id: str, headers: dict[str, str]
    ) -> httpx.Response:
        if self.body is not None:
            sent = client.request(self.method, self.path, json=self.body(customer_id), headers=headers)
        else:
            sent = client.request(self.method, self.path, params={"customerId": customer_id}, headers=headers)
        return await answered(sent)


NAMING_A_CUSTOMER = [
    Request(
        "order",
        "POST",
        "/api/v1/orders",
        lambda c: {"customerId": c, "assetName": "AAPL", "orderSide": "SELL", "size": "1", "price": "9"},
    ),
    Request("order", "GET", "/api/v1/orders"),
    Request(
        "account",
        "POST",
        "/api/v1/assets",
        lambda c: {"customerId": c, "assetName": "TRY", "totalSize": "5", "usableSize": "5"},
    ),
    Request(
        "account", "POST", "/api/v1/assets/withdraw", lambda c: {"customerId": c, "amount": "1", "iban": IBAN}
    ),
    Request("account", "GET", "/api/v1/assets"),
    Request("account", "GET", "/api/v1/ledger"),
    Request("account", "GET", "/api/v1/deposits"),
    Request("account", "GET", "/api/v1/withdrawals"),
]


def _name(request: Request) -> str:
    return f"{request.method} {request.path}"


@pytest.mark.usefixtures("owner_order")
@pytest.mark.parametrize("request_", NAMING_A_CUSTOMER, ids=_name)
async def test_a_customer_naming_another_customer_is_refused_and_nothing_changes(
    services: Services, request_: Request
) -> None:
    before = await services.footprint()
    response = await request_.send(
        services.client(request_.service), services.owner.id, services.intruder.headers
    )
    assert (response.status_code, response.json()["error"]) == (
        403,
        "customers may only act on their own account",
    ), response.text
    assert await services.footprint() == before


@pytest.mark.usefixtures("owner_order")
@pytest.mark.parametrize("request_", NAMING_A_CUSTOMER, ids=_name)
async def test_a_customer_naming_themselves_or_an_admin_naming_anyone_gets_past_authorization(
    services: Services, request_: Request
) -> None:
    for who in (services.owner, services.admin):
        response = await request_.send(services.client(request_.service), services.owner.id, who.headers)
        assert response.status_code in (200, 202), response.text


async def test_without_a_customer_id_a_customer_sees_only_their_own(
    services: Services, owner_order: str
) -> None:
    intruder, owner, admin = services.intruder.headers, services.owner.headers, services.admin.headers
    orders = (await services.order.get("/api/v1/orders", headers=intruder)).json()["orders"]
    assets = (await services.account.get("/api/v1/assets", headers=intruder)).json()["assets"]
    ledger = (await services.account.get("/api/v1/ledger", headers=intruder)).json()["entries"]
    assert {o["customerId"] for o in orders} | {a["customerId"] for a in assets} <= {services.intruder.id}
    assert {e["customerId"] for e in ledger} <= {services.intruder.id}

    mine = (await services.order.get("/api/v1/orders", headers=owner)).json()["orders"]
    assert owner_order in {o["id"] for o in mine} and {o["customerId"] for o in mine} == {services.owner.id}
    everyone = (await services.order.get("/api/v1/orders", headers=admin)).json()["orders"]
    assert owner_order in {o["id"] for o in everyone}
