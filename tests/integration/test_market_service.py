"""The market service over HTTP with real PostgreSQL, NATS and the auth service: who may read and change
instruments, what bad input gets, and what the feed publishes (read back through a MarketView as the order
service would), also across a restart of the service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal as D

import httpx
import pytest
from nats.aio.client import Client as NatsClient

from oms.auth.app import create_app as create_auth
from oms.kernel.broker import create_topology
from oms.kernel.db import create_pool, migrate
from oms.kernel.market import InstrumentStatus, MarketBoard
from oms.kernel.market_view import MarketView, follow_market
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.settings import Settings
from oms.market import store
from oms.market.app import create_app
from oms.market.domain import listing_of
from oms.market.reference import shipped_references
from oms.runtime.nats import EmbeddedNats
from tests.conftest import execute
from tests.integration.auth_service import ADMIN, bearer, make_settings, token_of
from tests.integration.conftest import delete_streams, eventually
from tests.integration.served import served

SYMBOLS = ("AAPL", "MSFT")


@dataclass
class Market:
    """A running market service, the auth service it trusts, and tokens of a customer and an admin."""

    url: str
    customer: dict[str, str]
    admin: dict[str, str]
    view: MarketView

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10)


def market_settings(auth: Settings, market_db: str, nats: EmbeddedNats, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": auth.data_dir,  # the service key auth shares with the services
        "auth_url": overrides.pop("auth_url"),
        "market_database_url": market_db,
        "nats_url": nats.url,
        "nats_identities_dir": nats.identities,
        "market_quotes_per_second": 20,
        "revocation_poll_seconds": 0.2,
    }
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


async def fresh_streams(operator: NatsAccess) -> None:
    nc = await connect_nats(operator, once=True)
    try:
        await delete_streams(nc.jetstream())
    finally:
        await nc.close()
    await create_topology(operator)


@pytest.fixture(scope="module")
def market_db(make_database: Callable[[str], str]) -> Iterator[str]:
    url = make_database("market")
    yield url


async def list_some(url: str, symbols: tuple[str, ...] = SYMBOLS) -> None:
    """Only these of the shipped data set (fewer quotes to wait through than 524 symbols' at start)."""
    migrate("market", url)
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        await store.seed(pool, [listing_of(r) for r in shipped_references() if r.symbol in symbols])
    finally:
        await pool.close()


@asynccontextmanager
async def running_market(settings: Settings) -> AsyncIterator[str]:
    async with served(create_app(settings), settings) as url:
        yield url


@pytest.fixture(scope="module")
async def market(
    market_db: str,
    make_database: Callable[[str], str],
    nats_server: EmbeddedNats,
    operator: NatsAccess,
    nats_identity: Callable[[str], NatsAccess],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Market]:
    await fresh_streams(operator)
    auth_settings = make_settings(make_database("auth"), tmp_path_factory.mktemp("data"))
    async with AsyncExitStack() as stack:
        auth_url = await stack.enter_async_context(served(create_auth(auth_settings), auth_settings))
        settings = market_settings(auth_settings, market_db, nats_server, auth_url=auth_url)
        await list_some(market_db)
        url = await stack.enter_async_context(running_market(settings))
        async with httpx.AsyncClient(base_url=auth_url) as auth:
            await auth.post("/register", json={"username": "carol", "password": "carol-password"})
            customer = bearer(await token_of(auth, "carol", "carol-password"))
            admin = bearer(await token_of(auth, ADMIN["username"], ADMIN["password"]))
        nc: NatsClient = await connect_nats(nats_identity("order"))
        stack.push_async_callback(nc.close)
        view = await stack.enter_async_context(follow_market(nc))
        await view.wait_ready(10)
        yield Market(url, customer, admin, view)


async def test_any_signed_in_user_reads_the_instruments_listed_from_the_data_set(market: Market) -> None:
    async with market.client() as client:
        assert (await client.get("/api/v1/instruments")).status_code == 401
        answer = await client.get("/api/v1/instruments", headers=market.customer)
        one = await client.get("/api/v1/instruments/aapl", headers=market.customer)
        missing = await client.get("/api/v1/instruments/ZZZ", headers=market.customer)
    assert answer.status_code == 200
    instruments = {i["symbol"]: i for i in answer.json()["instruments"]}
    assert set(instruments) >= set(SYMBOLS)
    assert instruments["AAPL"] == {
        "symbol": "AAPL",
        "name": "Apple Inc.",
        "tickSize": 0.01,
        "lotSize": 1,
        "priceBandPercent": 10,
        "status": "OPEN",
        "referencePrice": 249.64,
    }
    assert one.json() == instruments["AAPL"]
    assert (missing.status_code, missing.json()["error"]) == (404, "ZZZ is not listed")


async def test_only_an_admin_lists_or_changes_an_instrument(market: Market) -> None:
    body = {"name": "Türk Hava Yolları", "referencePrice": "312.25", "tickSize": 0.25, "lotSize": 1}
    async with market.client() as client:
        refused = await client.put("/api/v1/instruments/THYAO", json=body, headers=market.customer)
        created = await client.put("/api/v1/instruments/THYAO", json=body, headers=market.admin)
        again = await client.put("/api/v1/instruments/THYAO", json=body, headers=market.admin)
        band = await client.put(
            "/api/v1/instruments/THYAO", json={"priceBandPercent": 15}, headers=market.admin
        )
    assert (refused.status_code, refused.json()["error"]) == (403, "admin role required")
    assert created.status_code == 201
    assert created.json() | {"referencePrice": 0} == {
        "symbol": "THYAO",
        "name": "Türk Hava Yolları",
        "tickSize": 0.25,
        "lotSize": 1,
        "priceBandPercent": 10,
        "status": "OPEN",
        "referencePrice": 0,
    }
    assert created.json()["referencePrice"] == 312.25
    assert (again.status_code, band.status_code, band.json()["priceBandPercent"]) == (200, 200, 15)

    async def published() -> bool:
        listed = market.view.instrument("THYAO")
        return listed is not None and listed.price_band_percent == D(15)

    await eventually(published, within=10, what="THYAO's new band on the broker")


async def test_admins_listing_the_same_symbol_at_once_list_it_once(market: Market, market_db: str) -> None:
    body = {"name": "Aselsan", "referencePrice": "140.5", "tickSize": "0.1"}
    async with market.client() as client:
        answers = await asyncio.gather(
            *(client.put("/api/v1/instruments/ASELS", json=body, headers=market.admin) for _ in range(6))
        )
    codes = sorted(a.status_code for a in answers)
    assert codes.count(201) == 1 and set(codes) <= {200, 201, 409}, codes
    assert execute(market_db, "SELECT version FROM instruments WHERE symbol = 'ASELS'") == [(1,)]


@pytest.mark.parametrize(
    ("symbol", "body", "problem"),
    [
        ("AAPL", {"tickSize": -1}, "tickSize"),
        ("AAPL", {"tickSize": "0.05"}, "multiple of the tick size"),
        ("AAPL", {"priceBandPercent": 101}, "priceBandPercent"),
        ("AAPL", {"status": "CLOSED"}, "status"),
        ("AAPL", {"referencePrice": 1e30}, "referencePrice"),
        ("AAPL", {"lotSize": 1, "colour": "red"}, "colour"),
        ("AAPL", {"dailyVolatility": 2}, "dailyVolatility"),
        ("NEWCO", {"name": "New Co"}, "needs a name and a reference price"),
        ("TRY", {"name": "Lira", "referencePrice": 1}, "cash asset"),
        ("bad symbol!", {"name": "x", "referencePrice": 1}, "asset name"),
    ],
)
async def test_a_bad_change_is_refused_with_422_and_changes_nothing(
    market: Market, market_db: str, symbol: str, body: dict[str, object], problem: str
) -> None:
    before = execute(market_db, "SELECT * FROM instruments ORDER BY symbol")
    async with market.client() as client:
        answer = await client.put(f"/api/v1/instruments/{symbol}", json=body, headers=market.admin)
    assert answer.status_code == 422, answer.text
    assert set(answer.json()) == {"error", "detail"}
    assert problem in json.dumps(answer.json())
    assert execute(market_db, "SELECT * FROM instruments ORDER BY symbol") == before


async def test_quotes_flow_on_the_broker_and_are_served_as_the_latest(market: Market) -> None:
    async def quoted() -> bool:
        return all(market.view.quote(s) is not None for s in SYMBOLS)

    await eventually(quoted, within=10, what="quotes of AAPL and MSFT")
    async with market.client() as client:
        answer = await client.get("/api/v1/quotes", params={"symbol": "AAPL"}, headers=market.customer)
        everything = await client.get("/api/v1/quotes", headers=market.customer)
        bad = await client.get("/api/v1/quotes", params={"symbol": "x y"}, headers=market.customer)
        anonymous = await client.get("/api/v1/quotes")
    [aapl] = answer.json()["quotes"]
    assert aapl["symbol"] == "AAPL" and 0 < aapl["bid"] < aapl["ask"]
    assert isinstance(aapl["bid"], float | int)  # a JSON number
    assert D(str(aapl["ask"])) % D("0.01") == 0
    assert abs(D(str(aapl["last"])) / D("249.64") - 1) < D("0.1")  # around its reference price
    assert set(SYMBOLS) <= {q["symbol"] for q in everything.json()["quotes"]}
    assert (bad.status_code, anonymous.status_code) == (422, 401)


async def test_the_quote_stream_sends_the_latest_then_each_new_quote(market: Market) -> None:
    events: list[dict[str, object]] = []
    async with (
        market.client() as client,
        client.stream(
            "GET", "/api/v1/quotes/stream", params={"symbol": "MSFT"}, headers=market.customer
        ) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
            if len(events) == 3:
                break
    assert {e["symbol"] for e in events} == {"MSFT"}
    sequences = [int(str(e["sequence"])) for e in events]
    assert sequences == sorted(set(sequences))


async def test_a_halted_instrument_is_published_and_gets_no_more_quotes(market: Market) -> None:
    async with market.client() as client:
        halted = await client.put("/api/v1/instruments/AAPL", json={"status": "HALTED"}, headers=market.admin)
    assert halted.json()["status"] == "HALTED"

    async def seen_halted() -> bool:
        listed = market.view.instrument("AAPL")
        return listed is not None and listed.status is InstrumentStatus.HALTED

    await eventually(seen_halted, within=10, what="AAPL halted on the broker")
    aapl, msft = _sequence(market.view.board, "AAPL"), _sequence(market.view.board, "MSFT")

    async def msft_went_on() -> bool:
        return _sequence(market.view.board, "MSFT") >= msft + 20

    await eventually(msft_went_on, within=10, what="20 more quotes of MSFT")
    assert _sequence(market.view.board, "AAPL") <= aapl + 1  # at most one stamped before the halt
    async with market.client() as client:
        await client.put("/api/v1/instruments/AAPL", json={"status": "OPEN"}, headers=market.admin)

    async def quoted_again() -> bool:
        return _sequence(market.view.board, "AAPL") > aapl + 1

    await eventually(quoted_again, within=10, what="AAPL quoted again once reopened")


def _sequence(board: MarketBoard, symbol: str) -> int:
    quote = board.quote(symbol)
    return quote.sequence if quote else 0


async def test_health_metrics_and_docs_are_served(market: Market) -> None:
    async with market.client() as client:
        health = await client.get("/health")
        metrics = await client.get("/metrics")
        docs = await client.get("/docs")
        openapi = await client.get("/openapi.json")
    assert health.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "instruments": "ok"},
    }
    assert "oms_market_quotes_published_total" in metrics.text
    assert docs.status_code == 200
    assert {
        "/api/v1/instruments",
        "/api/v1/instruments/{symbol}",
        "/api/v1/quotes",
        "/api/v1/quotes/stream",
    } <= set(openapi.json()["paths"])


async def test_a_restarted_service_goes_on_from_the_last_quotes_and_lists_nothing_twice(
    market: Market,
    make_database: Callable[[str], str],
    nats_server: EmbeddedNats,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Another market service on a database of its own, started, stopped and started again on the same
    broker: the second start's quotes follow the first's (else the readers would drop them as old), and the
    instruments are not listed again. (IBM and ORCL: the module's service quotes AAPL and MSFT.)"""
    db = make_database("market_restart")
    auth_settings = make_settings(make_database("auth"), tmp_path_factory.mktemp("data2"))
    async with served(create_auth(auth_settings), auth_settings) as auth_url:
        settings = market_settings(auth_settings, db, nats_server, auth_url=auth_url)
        await list_some(db, ("IBM", "ORCL"))
        async with running_market(settings):
            await until(lambda: _sequence(market.view.board, "IBM") >= 5, "IBM's first quotes")
        stopped_at = _sequence(market.view.board, "IBM")
        async with running_market(settings):
            await until(lambda: _sequence(market.view.board, "IBM") >= stopped_at + 5, "quotes after it")
    assert execute(db, "SELECT symbol, version FROM instruments ORDER BY 1") == [("IBM", 1), ("ORCL", 1)]


async def until(condition: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check, within=15, what=what)
