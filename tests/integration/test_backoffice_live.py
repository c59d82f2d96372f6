"""The back office's live stream (`GET /live`) on the running flow (auth, order, account, relays, NATS): the
ticker and a chart follow the quotes the market feed publishes on the broker — through a broker restart —
and an order's status flips to MATCHED on the page's stream when a quote crosses it, also across a restart
of the order service; the stream ends when the session does."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import urlsplit

import httpx
import pytest

from oms.backoffice.app import create_app as backoffice_app
from oms.backoffice.order_feed import ServerEvent, server_events
from oms.kernel.broker import JetStreamBroker, Outgoing
from oms.kernel.market import Instrument, Quote, instrument_subject, quote_subject
from oms.kernel.permissions import MARKET
from oms.order.app import create_app as order_app
from oms.runtime.nats import EmbeddedNats
from tests.integration.auth_service import ADMIN
from tests.integration.market_system import MarketSystem, running
from tests.integration.served import served

D = Decimal
pytestmark = pytest.mark.timeout(180)
LIVE = Instrument(symbol="LIVE", name="Live Co", tick_size=D("0.01"), lot_size=D(1), reference_price=D(50))


@pytest.fixture(scope="module")
async def system(
    make_database: Callable[[str], str], nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MarketSystem]:
    async with running(make_database, nats_server, tmp_path_factory.mktemp("live")) as running_system:
        yield running_system


@pytest.fixture(scope="module")
async def backoffice(system: MarketSystem) -> AsyncIterator[str]:
    """The back office on the running system, following the market on the broker as `backoffice`."""
    settings = system.settings.model_copy(
        update={"order_url": system.urls["order"], "account_url": system.urls["account"]}
    )
    async with served(backoffice_app(settings), settings) as url:
        yield url


@pytest.fixture(scope="module")
async def feed(nats_server: EmbeddedNats) -> AsyncIterator[JetStreamBroker]:
    """The market feed's publisher, as its own identity."""
    broker = await JetStreamBroker.connect(nats_server.access(MARKET))
    yield broker
    await broker.close()


async def publish(feed: JetStreamBroker, sequence: int, last: str) -> None:
    price = D(last)
    quote = Quote(
        symbol="LIVE", bid=price - D("0.01"), ask=price + D("0.01"), last=price, time=datetime.now(UTC),
        sequence=sequence,
    )  # fmt: skip
    await feed.publish([Outgoing(quote_subject("LIVE"), quote.model_dump_json().encode(), quote.msg_id)])


@asynccontextmanager
async def signed_in(base: str, username: str, password: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser's session at the back office (the cookie kept by the client)."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        form = await client.get("/login")
        found = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert found is not None, form.text[:500]
        fields = {"csrf_token": found.group(1), "username": username, "password": password, "next": "/"}
        answer = await client.post("/login", data=fields)
        assert answer.status_code == 303, answer.text[:500]
        yield client


class Stream:
    """A page's live stream, read event by event."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self.events = server_events(lines)
        self.seen: list[str] = []

    async def until(self, name: str, contains: str = "", within: float = 20) -> ServerEvent:
        """The next event called `name` whose data contains `contains` (AssertionError after `within` s)."""

        async def read() -> ServerEvent:
            async for event in self.events:
                self.seen.append(event.name)
                if event.name == name and contains in event.data:
                    return event
            raise AssertionError(f"the stream ended; events seen: {self.seen}")

        try:
            return await asyncio.wait_for(read(), within)
        except TimeoutError:
            raise AssertionError(f"no {name} with {contains!r} in {within}s; seen {self.seen}") from None


@asynccontextmanager
async def live(client: httpx.AsyncClient, **params: str) -> AsyncIterator[Stream]:
    async with client.stream("GET", "/live", params=params) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response.aiter_lines())


async def restart_order_service(system: MarketSystem) -> None:
    """Stop the order service and serve it again on the same address (as a supervisor restarts it)."""
    port = urlsplit(system.urls["order"]).port
    await system.stop_order_service()
    app = order_app(system.settings, system.board, system.clock)
    server = served(app, system.settings, port=port)
    await system.order_service.enter_async_context(server)


async def test_an_order_flips_to_matched_on_the_page_stream_also_across_an_order_service_restart(
    system: MarketSystem, backoffice: str
) -> None:
    symbol = system.listed(reference="300")
    customer = await system.customer("100000")
    await system.quote(symbol, "299.95", "300.05")
    first = await system.placed(customer, assetName=symbol, price="299.00")
    second = await system.placed(customer, assetName=symbol, price="298.00")
    await system.resting(first)
    await system.resting(second)
    async with (
        signed_in(backoffice, ADMIN["username"], ADMIN["password"]) as admin,
        live(admin, orders=f"{first},{second}", view="row") as page,
    ):
        await page.until(f"order-{first}", 'data-status="PENDING"')
        await system.quote(symbol, "298.90", "298.95")  # crosses the first, not the second
        matched = await page.until(f"order-{first}", 'data-status="MATCHED"')
        assert "298.95" in matched.data  # executed at the ask, shown in its row

        await restart_order_service(system)
        await system.quote(symbol, "297.90", "297.95")  # crosses the second
        await page.until(f"order-{second}", 'data-status="MATCHED"', within=40)


async def test_the_ticker_and_a_chart_follow_the_quotes_on_the_broker_through_its_restart(
    system: MarketSystem, backoffice: str, feed: JetStreamBroker, nats_server: EmbeddedNats
) -> None:
    item = f"i:LIVE:{datetime.now(UTC).timestamp()}"
    await feed.publish([Outgoing(instrument_subject("LIVE"), LIVE.model_dump_json().encode(), item)])
    await publish(feed, 1, "50.25")
    async with (
        signed_in(backoffice, ADMIN["username"], ADMIN["password"]) as admin,
        live(admin, chart="LIVE") as page,
    ):
        ticker = await page.until("ticker", 'id="tick-LIVE"')
        assert "50.25" in ticker.data and "▲" in ticker.data and "+0.25" in ticker.data
        assert "<svg" in (await page.until("chart-LIVE")).data

        await publish(feed, 2, "49.50")
        fell = await page.until("quote-LIVE", "49.50")
        assert "▼" in fell.data and "-0.50" in fell.data and 'class="tick tick-down"' in fell.data
        await page.until("chart-LIVE", 'data-sequence="2"')

        nats_server.stop()
        nats_server.start()
        await publish(feed, 3, "51.00")  # retried until the broker is back
        await page.until("quote-LIVE", "51.00", within=40)


async def test_the_stream_ends_when_the_session_is_signed_out(system: MarketSystem, backoffice: str) -> None:
    async with signed_in(backoffice, ADMIN["username"], ADMIN["password"]) as admin, live(admin) as page:
        await page.until("ticker")
        form = await admin.get("/admin")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf is not None
        # Signing out elsewhere with the same token (another tab) ends this page's stream too.
        async with httpx.AsyncClient(base_url=backoffice, cookies=admin.cookies) as other:
            assert (await other.post("/logout", data={"csrf_token": csrf.group(1)})).status_code == 303

        async def ended() -> None:
            async for _ in page.events:
                pass

        await asyncio.wait_for(ended(), 20)
