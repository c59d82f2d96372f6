"""The order flow at market prices, running for real in the test process: auth, order and account served by
uvicorn on their own PostgreSQL databases, both relays streaming their outboxes to NATS, the services'
durable consumers — and the market as a `MarketBoard` the test publishes quotes to, deterministically."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from oms.account.app import create_app as account_app
from oms.auth.app import create_app as auth_app
from oms.kernel.broker import JetStreamBroker
from oms.kernel.market import Instrument, InstrumentStatus, MarketBoard, Quote
from oms.kernel.nats_access import connect_nats
from oms.kernel.permissions import OPERATOR
from oms.kernel.settings import ExecutionMode, Settings
from oms.kernel.topology import slot_name
from oms.order.app import create_app as order_app
from oms.runtime.audit import AuditReport, MarketRules, run_audit
from oms.runtime.nats import EmbeddedNats
from tests.conftest import execute
from tests.integration.auth_service import ADMIN, bearer, make_settings
from tests.integration.conftest import RelayThread, ServiceDatabase, delete_streams
from tests.integration.served import served

D = Decimal
THYAO = Instrument(
    symbol="THYAO", name="Türk Hava Yolları", tick_size=D("0.05"), lot_size=D(1), reference_price=D(300)
)
GARAN = Instrument(
    symbol="GARAN", name="Garanti BBVA", tick_size=D("0.01"), lot_size=D(10), reference_price=D(100)
)


@dataclass
class MovableClock:
    """The order service's clock for the market's close: the real time, moved by `offset`."""

    offset: timedelta = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Customer:
    id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


@dataclass
class MarketSystem:
    board: MarketBoard
    clock: MovableClock
    settings: Settings
    urls: dict[str, str]  # the services' base URLs
    databases: dict[str, str]
    relays: dict[str, RelayThread]
    http: httpx.AsyncClient
    admin: Customer = field(default_factory=lambda: Customer("", ""))
    sequences: dict[str, int] = field(default_factory=dict)
    order_service: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def start_order_service(self) -> None:
        """Serve the order service on a board that knows what this one knows (as a restarted process's
        market view is filled again from the broker's latest instruments and quotes)."""
        board = MarketBoard()
        for instrument in self.board.instruments():
            board.list_instrument(instrument)
            if (latest := self.board.quote(instrument.symbol)) is not None:
                await board.publish(latest)
        self.board = board
        app = order_app(self.settings, board, self.clock)
        self.urls["order"] = await self.order_service.enter_async_context(served(app, self.settings))

    async def stop_order_service(self) -> None:
        await self.order_service.aclose()
        self.order_service = AsyncExitStack()

    @asynccontextmanager
    async def relay_paused(self, service: str) -> AsyncIterator[None]:
        """`service`'s events stay in its outbox for the block (then its relay resumes from its slot)."""
        self.relays[service].halt()
        try:
            yield
        finally:
            self.relays[service].start()

    def listed(self, tick: str = "0.05", lot: str = "1", reference: str = "300", halted: bool = False) -> str:
        """A new symbol of its own for a test, listed on the board."""
        symbol = f"T{uuid.uuid4().hex[:8].upper()}"
        status = InstrumentStatus.HALTED if halted else InstrumentStatus.OPEN
        instrument = Instrument(
            symbol=symbol, name=symbol, tick_size=D(tick), lot_size=D(lot), reference_price=D(reference),
            status=status,
        )  # fmt: skip
        self.board.list_instrument(instrument)
        return symbol

    async def customer(self, try_amount: str = "0", **assets: str) -> Customer:
        """A new customer, credited (by the admin) with `try_amount` TRY and the given assets."""
        name = f"c{uuid.uuid4().hex[:12]}"
        auth = self.urls["auth"]
        answer = await self.http.post(f"{auth}/register", json={"username": name, "password": "password-123"})
        assert answer.status_code == 201, answer.text
        login = await self.http.post(f"{auth}/login", json={"username": name, "password": "password-123"})
        customer = Customer(answer.json()["id"], login.json()["token"])
        for asset, amount in {"TRY": try_amount, **assets}.items():
            if D(amount) > 0:
                await self.deposit(customer, asset, amount)
        return customer

    async def deposit(self, customer: Customer, asset: str, amount: str) -> None:
        body = {"customerId": customer.id, "assetName": asset, "totalSize": amount, "usableSize": amount}
        answer = await self.http.post(
            f"{self.urls['account']}/api/v1/assets", json=body, headers=self.admin.headers
        )
        assert answer.status_code == 200, answer.text

    async def place(self, customer: Customer, **terms: Any) -> httpx.Response:
        body = {"customerId": customer.id, "assetName": "THYAO", "orderSide": "BUY", "size": "10", **terms}
        return await self.http.post(
            f"{self.urls['order']}/api/v1/orders", json=body, headers=customer.headers
        )

    async def placed(self, customer: Customer, **terms: Any) -> str:
        answer = await self.place(customer, **terms)
        assert answer.status_code == 200, answer.text
        order_id: str = answer.json()["id"]
        return order_id

    async def order(self, order_id: str) -> dict[str, Any]:
        answer = await self.http.get(
            f"{self.urls['order']}/api/v1/orders/{order_id}", headers=self.admin.headers
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def settled(self, order_id: str, *statuses: str, within: float = 15) -> dict[str, Any]:
        """The order once it is in one of `statuses` and, if it is reserved, MATCHED or CANCELED, once the
        account has caught up with it (nothing held for it)."""
        deadline = time.monotonic() + within
        while True:
            order = await self.order(order_id)
            if order["status"] in statuses and (order["status"] == "PENDING" or await self._quiet(order)):
                return order
            if time.monotonic() > deadline:
                raise AssertionError(f"order {order_id} not {statuses} within {within}s: {order}")
            await asyncio.sleep(0.02)

    async def _quiet(self, order: dict[str, Any]) -> bool:
        rows = execute(
            self.databases["account"],
            f"SELECT count(*) FROM reservations WHERE order_id = '{order['id']}' AND status = 'HELD'",
        )
        return rows[0][0] == 0

    async def resting(self, order_id: str, within: float = 15) -> dict[str, Any]:
        """The order once its funds are reserved and it rests PENDING."""
        deadline = time.monotonic() + within
        while True:
            order = await self.order(order_id)
            if order["status"] == "PENDING" and order["fundsReserved"]:
                return order
            if order["status"] != "PENDING" or time.monotonic() > deadline:
                raise AssertionError(f"order {order_id} does not rest: {order}")
            await asyncio.sleep(0.02)

    async def balances(self, customer: Customer) -> dict[str, tuple[Decimal, Decimal]]:
        url = f"{self.urls['account']}/api/v1/assets"
        answer = await self.http.get(url, params={"customerId": customer.id}, headers=customer.headers)
        return {
            a["assetName"]: (D(str(a["totalSize"])), D(str(a["usableSize"]))) for a in answer.json()["assets"]
        }

    async def quote(self, symbol: str, bid: str, ask: str, last: str | None = None) -> Quote:
        """Publish the symbol's next quote on the board, as the market feed would."""
        self.sequences[symbol] = self.sequences.get(symbol, 0) + 1
        quote = Quote(
            symbol=symbol, bid=D(bid), ask=D(ask), last=D(last or bid), time=datetime.now(UTC),
            sequence=self.sequences[symbol],
        )  # fmt: skip
        await self.board.publish(quote)
        return quote

    @asynccontextmanager
    async def order_stream(self, who: Customer, **params: str) -> AsyncIterator[OrderStream]:
        """`GET /api/v1/orders/stream` as `who`, open for the block."""
        url = f"{self.urls['order']}/api/v1/orders/stream"
        async with self.http.stream("GET", url, params=params, headers=who.headers) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield OrderStream(response.aiter_lines())

    async def audit(self) -> AuditReport:
        rules = MarketRules.from_settings(self.settings)
        return await run_audit(self.databases["order"], self.databases["account"], 15, rules)


@dataclass
class OrderStream:
    """The `order` events of a stream, read as they come."""

    lines: AsyncIterator[str]
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def until(self, check: Callable[[dict[str, Any]], bool], within: float = 10) -> dict[str, Any]:
        """Read events until one passes `check` (every event read is kept in `seen`)."""
        try:
            return await asyncio.wait_for(self._read_until(check), within)
        except TimeoutError:
            raise AssertionError(f"no such event within {within}s; seen {self.seen}") from None

    async def _read_until(self, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        event = ""
        async for line in self.lines:
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "order":
                order: dict[str, Any] = json.loads(line.removeprefix("data: "))
                self.seen.append(order)
                if check(order):
                    return order
        raise AssertionError(f"the stream ended; seen {self.seen}")


def _drop_slots(url: str, services: Iterable[str]) -> None:
    for service in services:
        with suppress(Exception):
            execute(url, f"SELECT pg_drop_replication_slot('{slot_name(service)}')")


@asynccontextmanager
async def running(
    make_database: Callable[[str], str],
    nats_server: EmbeddedNats,
    data_dir: Path,
    mode: ExecutionMode = ExecutionMode.MARKET,
    instruments: Iterable[Instrument] = (THYAO, GARAN),
) -> AsyncIterator[MarketSystem]:
    """The system in `mode`, with a board listing `instruments` and no quote yet."""
    databases = {service: make_database(service) for service in ("auth", "order", "account")}
    # Replication slots are the server's: left by another test, ours could not be made.
    for url in databases.values():
        _drop_slots(url, ("order", "account"))
    operator = nats_server.access(OPERATOR)
    nc = await connect_nats(operator, once=True)
    await delete_streams(nc.jetstream())
    await nc.close()
    topology = await JetStreamBroker.connect(operator, once=True)
    await topology.ensure_topology()
    await topology.close()

    board, clock = MarketBoard(), MovableClock()
    for instrument in instruments:
        board.list_instrument(instrument)
    settings = make_settings(
        databases["auth"],
        data_dir,
        order_database_url=databases["order"],
        account_database_url=databases["account"],
        nats_url=nats_server.url,
        nats_identities_dir=nats_server.identities,
        execution=mode,
        customer_deposits="instant",
        register_address_max_attempts=10_000,
        revocation_poll_seconds=0.2,
    )
    async with AsyncExitStack() as stack:
        urls = {"auth": await stack.enter_async_context(served(auth_app(settings), settings))}
        settings = settings.model_copy(update={"auth_url": urls["auth"]})
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        system = MarketSystem(board, clock, settings, urls, databases, {}, http)
        await system.start_order_service()
        stack.push_async_callback(system.stop_order_service)
        urls["account"] = await stack.enter_async_context(served(account_app(settings), settings))
        for service in ("order", "account"):
            access = nats_server.access(f"relay-{service}")
            system.relays[service] = RelayThread(ServiceDatabase(service, databases[service]), access).start()
            stack.callback(_drop_slots, databases[service], [service])
            stack.callback(system.relays[service].halt)
        login = await http.post(f"{urls['auth']}/login", json=ADMIN)
        system.admin = Customer("", login.json()["token"])
        yield system
