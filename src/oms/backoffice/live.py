"""What changes on screen by itself: one stream of server-sent events per page (`GET /live`), carrying HTML
for htmx to swap in — the ticker strip and each of its symbols' quotes, a symbol's price chart, and the rows
or status of the PENDING orders the page shows. The browser talks only to the back office; the back office
follows the market on the broker (`tape.Tape`) and the user's orders at the order service (`order_feed`).

Each page's stream starts from the current state (a browser that reconnects — EventSource does so by itself —
gets the ticker, the chart and its orders afresh, so no event id is needed) and ends when the session does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from oms.backoffice.charts import price_chart
from oms.backoffice.models import Order, OrderFilter
from oms.backoffice.order_feed import follow_orders
from oms.backoffice.services import ServiceError, Services
from oms.backoffice.sessions import Login, SignedIn, read_session
from oms.backoffice.tape import Tape
from oms.backoffice.ticker import (
    configured_symbols,
    most_active,
    ticker_item,
    ticker_symbols,
)
from oms.backoffice.views import TEMPLATES, ServicesDep, local_path, render
from oms.kernel.market import Instrument
from oms.kernel.money import SYMBOL
from oms.kernel.settings import ExecutionMode
from oms.kernel.sse import EventStreamResponse
from oms.kernel.tokens import KeysUnavailable, TokenError, TokenVerifier

log = logging.getLogger(__name__)
router = APIRouter()

FLUSH_SECONDS: Final = 0.5  # quotes are sent at most this often per symbol (the newest one)
CHART_SECONDS: Final = 1.0  # a chart is redrawn at most this often
SESSION_CHECK_SECONDS: Final = 5.0  # how often a stream checks that its session still holds
WATCH_AGAIN_SECONDS: Final = 60.0
MAX_FOLLOWED: Final = 100  # orders one page may follow (the overview shows up to 100 PENDING)
RECENT_ORDERS: Final = 50  # orders read to find what a user trades


def html_event(name: str, html: str) -> bytes:
    """One server-sent event whose data is `html` (one `data:` line per line of it)."""
    lines = [f"event: {name}", *(f"data: {line}" for line in html.strip().splitlines() or [""])]
    return ("\n".join(lines) + "\n\n").encode()


def tape_of(request: Request) -> Tape:
    tape: Tape = request.app.state.tape
    return tape


# -- the ticker and the chart --------------------------------------------------------------------------
async def strip_symbols(services: Services, login: Login, tape: Tape, configured: str) -> list[str]:
    """The ticker's symbols for `login`: what they hold and ordered (admins: what is ordered most), then the
    configured ones, then the first listed. What the services cannot tell right now is left out."""
    held: list[str] = []
    ordered: list[str] = []
    with contextlib.suppress(ServiceError):
        recent = await services.orders(login.token, OrderFilter(), limit=RECENT_ORDERS)
        assets = [o.asset for o in recent.orders]
        ordered = most_active(assets) if login.is_admin else list(dict.fromkeys(assets))
    if not login.is_admin:
        with contextlib.suppress(ServiceError):
            held = [b.asset for b in await services.balances(login.token)]
    chosen = configured_symbols(configured)
    listed = tape.symbols() or [*held, *ordered, *chosen]
    if login.is_admin and chosen:
        return ticker_symbols(listed, configured=chosen)
    return ticker_symbols(listed, held=held, ordered=ordered, configured=chosen)


def _render(name: str, **context: Any) -> str:
    return TEMPLATES.get_template(name).render(context)


def _ticker_html(tape: Tape, symbols: Iterable[str]) -> str:
    items = [ticker_item(s, tape.quote(s), tape.instrument(s)) for s in symbols]
    return _render("_ticker.html", items=items)


def _chart_html(tape: Tape, symbol: str) -> str:
    chart = price_chart(symbol, tape.history.points(symbol), datetime.now(UTC))
    quote = tape.quote(symbol)
    item = ticker_item(symbol, quote, tape.instrument(symbol))
    return _render("_price_chart.html", chart=chart, item=item, symbol=symbol)


async def market_events(tape: Tape, symbols: list[str], chart: str | None) -> AsyncIterator[bytes]:
    """The strip at once, then each symbol's newest quote (at most every `FLUSH_SECONDS`); the chart of
    `chart` at once and then redrawn as its quotes come (at most every `CHART_SECONDS`)."""
    watched = [*symbols, *([chart] if chart else [])]
    tape.watch(watched)
    sent = {s: _sequence(tape, s) for s in symbols}
    charted = _sequence(tape, chart) if chart else 0
    yield html_event("ticker", _ticker_html(tape, symbols))
    if chart:
        yield html_event(f"chart-{chart}", _chart_html(tape, chart))
    drawn = watched_at = time.monotonic()
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        for symbol in symbols:
            if (sequence := _sequence(tape, symbol)) != sent[symbol]:
                sent[symbol] = sequence
                item = ticker_item(symbol, tape.quote(symbol), tape.instrument(symbol))
                yield html_event(f"quote-{symbol}", _render("_ticker_item.html", item=item))
        now = time.monotonic()
        if chart and now - drawn >= CHART_SECONDS and (sequence := _sequence(tape, chart)) != charted:
            charted, drawn = sequence, now
            yield html_event(f"chart-{chart}", _chart_html(tape, chart))
        if now - watched_at >= WATCH_AGAIN_SECONDS:
            tape.watch(watched)
            watched_at = now


def _sequence(tape: Tape, symbol: str) -> int:
    quote = tape.quote(symbol)
    return quote.sequence if quote else 0


# -- orders --------------------------------------------------------------------------------------------
def _followed_ids(text: str) -> list[str]:
    ids = []
    for part in text.split(",")[:MAX_FOLLOWED]:
        with contextlib.suppress(ValueError):
            ids.append(str(uuid.UUID(part.strip())))
    return ids


def _order_renderer(
    request: Request, services: Services, login: Login, view: str, here: str
) -> Callable[[Order], Awaitable[str]]:
    manual = request.app.state.settings.execution is ExecutionMode.MANUAL
    session = read_session(request)
    csrf = session.csrf if session else ""
    base = {"login": login, "csrf": csrf, "manual_mode": manual, "admin": login.is_admin, "here": here}

    async def render_order(order: Order) -> str:
        if view == "status":
            return _render("_order_status.html", order=order, **base)
        names = await services.usernames(login.token) if login.is_admin else {}
        return _render("_order_row.html", order=order, names=names, **base)

    return render_order


def followed_orders(services: Services, login: Login, ids: list[str]) -> AsyncIterator[Order]:
    """The changes of the orders `ids` of `login`'s (`order_feed.follow_orders`)."""

    async def read(wanted: Iterable[str]) -> list[Order]:
        found = await asyncio.gather(
            *(services.order(login.token, i) for i in wanted), return_exceptions=True
        )
        return [o for o in found if isinstance(o, Order)]

    return follow_orders(ids, lambda: services.order_stream(login.token), read)


async def _rendered(
    orders: AsyncIterator[Order], render_order: Callable[[Order], Awaitable[str]]
) -> AsyncIterator[bytes]:
    async for order in orders:
        yield html_event(f"order-{order.id}", await render_order(order))


# -- one stream per page -------------------------------------------------------------------------------
async def while_signed_in(
    events: list[AsyncIterator[bytes]], login: Login, verifier: TokenVerifier
) -> AsyncIterator[bytes]:
    """The events of every source as they come, until the session ends (signed out, password changed,
    disabled: the token is refused) or every source has ended."""
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=256)

    async def pump(source: AsyncIterator[bytes]) -> None:
        try:
            async for event in source:
                await queue.put(event)
        except Exception:
            log.exception("a live source of the back office failed")

    tasks = [asyncio.create_task(pump(source)) for source in events]
    checked = time.monotonic()
    try:
        while not all(t.done() for t in tasks) or not queue.empty():
            with contextlib.suppress(TimeoutError):
                yield await asyncio.wait_for(queue.get(), SESSION_CHECK_SECONDS)
            if time.monotonic() - checked >= SESSION_CHECK_SECONDS:
                checked = time.monotonic()
                if not await _still_valid(login, verifier):
                    return
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _still_valid(login: Login, verifier: TokenVerifier) -> bool:
    if login.expires_at <= time.time():
        return False
    try:
        await verifier.verify(login.token)
    except TokenError:
        return False
    except KeysUnavailable:
        return True  # not known right now: the stream goes on
    return True


@router.get("/live")
async def live(
    request: Request,
    login: SignedIn,
    services: ServicesDep,
    orders: str = "",
    view: str = "row",
    chart: str = "",
    here: str = "",
) -> Response:
    """The page's live updates: the ticker, the chart of `chart`, the PENDING `orders` (`view`: their list
    rows or the order page's status block)."""
    tape = tape_of(request)
    symbols = await strip_symbols(services, login, tape, request.app.state.settings.backoffice_ticker)
    charted = chart.upper() if SYMBOL.fullmatch(chart.upper()) else None
    sources = [market_events(tape, symbols, charted)]
    if ids := _followed_ids(orders):
        render_order = _order_renderer(request, services, login, view, local_path(here, "/orders"))
        sources.append(_rendered(followed_orders(services, login, ids), render_order))
    return EventStreamResponse(while_signed_in(sources, login, request.app.state.token_verifier))


# -- a symbol's page -----------------------------------------------------------------------------------
async def _instrument(tape: Tape, services: Services, login: Login, symbol: str) -> Instrument:
    found = tape.instrument(symbol)
    return found if found is not None else await services.instrument(login.token, symbol)


@router.get("/market/{symbol}")
async def market_page(request: Request, symbol: str, login: SignedIn, services: ServicesDep) -> Response:
    """A symbol's latest quote and price chart, both live, and its instrument's rules."""
    symbol = symbol.upper()
    if not SYMBOL.fullmatch(symbol):
        raise ServiceError(404, f"No such symbol: {symbol[:20]}")
    tape = tape_of(request)
    instrument = await _instrument(tape, services, login, symbol)
    tape.watch([symbol])
    context = {"instrument": instrument, "chart_html": _chart_html(tape, symbol), "live_chart": symbol}
    return render(request, "market.html", context)
