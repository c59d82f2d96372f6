"""The market service's HTTP API: the instruments (any signed-in user reads them, admins list and change
them) and the quotes (the latest, and a stream of server-sent events)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from oms.kernel.deps import Pool, units_of_work
from oms.kernel.errors import ApiError, error_responses
from oms.kernel.http import ExactJSONResponse, ExactNumber
from oms.kernel.market import Instrument, InstrumentStatus, MarketBoard, Quote
from oms.kernel.money import InvalidValue, PositiveDecimal, parse_symbol
from oms.kernel.sql import WriteConflict
from oms.kernel.sse import EventStreamResponse, sse_event
from oms.kernel.tokens import AdminUser, CurrentUser
from oms.kernel.unit_of_work import UnitOfWorkFactory
from oms.market import store
from oms.market.domain import ChangeRefused, InstrumentChange, Listing, change_listing
from oms.market.feed import Feed
from oms.market.store import Instruments

router = APIRouter(prefix="/api/v1", tags=["market"])
MAX_STREAM_BEHIND: Final = 10_000  # quotes a stream's client may lag before it is let go


class InstrumentView(BaseModel):
    """One listed symbol and the rules an order for it must follow."""

    symbol: str
    name: str
    tickSize: ExactNumber
    lotSize: ExactNumber
    priceBandPercent: ExactNumber
    status: InstrumentStatus
    referencePrice: ExactNumber


class InstrumentList(BaseModel):
    instruments: list[InstrumentView]


class InstrumentChangeRequest(BaseModel):
    """What to set; a field left out keeps its value (a new instrument needs `name` and `referencePrice`)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None
    tickSize: PositiveDecimal | None = None
    lotSize: PositiveDecimal | None = None
    priceBandPercent: Annotated[PositiveDecimal, Field(le=100)] | None = None
    status: InstrumentStatus | None = None
    referencePrice: PositiveDecimal | None = None
    dailyVolatility: Annotated[Decimal, Field(ge=0, lt=1, allow_inf_nan=False)] | None = Field(
        default=None, description="the sim's daily volatility (standard deviation of log returns), e.g. 0.02"
    )


class QuoteView(BaseModel):
    """The market for one symbol: best bid and ask, last trade; `sequence` grows by one per quote."""

    symbol: str
    bid: ExactNumber
    ask: ExactNumber
    last: ExactNumber
    time: datetime
    sequence: int


class QuoteList(BaseModel):
    quotes: list[QuoteView]


def instrument_view(instrument: Instrument) -> dict[str, Any]:
    return {
        "symbol": instrument.symbol,
        "name": instrument.name,
        "tickSize": instrument.tick_size,
        "lotSize": instrument.lot_size,
        "priceBandPercent": instrument.price_band_percent,
        "status": instrument.status.value,
        "referencePrice": instrument.reference_price,
    }


def quote_view(quote: Quote) -> dict[str, Any]:
    return {
        "symbol": quote.symbol,
        "bid": quote.bid,
        "ask": quote.ask,
        "last": quote.last,
        "time": quote.time.isoformat(),
        "sequence": quote.sequence,
    }


def _symbol(symbol: str) -> str:
    try:
        return parse_symbol(symbol)
    except InvalidValue as exc:
        raise ApiError(422, "invalid request", [{"field": "symbol", "message": str(exc)}]) from None


SymbolPath = Annotated[str, Path(description="e.g. AAPL")]
Symbols = Annotated[list[str] | None, Query(alias="symbol", description="only these symbols (repeatable)")]


async def _board(request: Request) -> MarketBoard:
    board: MarketBoard = request.app.state.market.board
    return board


async def _feed(request: Request) -> Feed:
    feed: Feed = request.app.state.feed
    return feed


Board = Annotated[MarketBoard, Depends(_board)]
TheFeed = Annotated[Feed, Depends(_feed)]
Units = Annotated[UnitOfWorkFactory[Instruments], Depends(units_of_work)]


@router.get("/instruments", response_model=InstrumentList)
async def list_instruments(
    _: CurrentUser, pool: Pool, status: InstrumentStatus | None = None
) -> ExactJSONResponse:
    """Every listed instrument (or those with `status`), by symbol."""
    listings = await store.all_listings(pool)
    views = [
        instrument_view(x.instrument) for x in listings if status is None or x.instrument.status is status
    ]
    return ExactJSONResponse({"instruments": views})


@router.get("/instruments/{symbol}", response_model=InstrumentView, responses=error_responses(404))
async def get_instrument(_: CurrentUser, pool: Pool, symbol: SymbolPath) -> ExactJSONResponse:
    """One instrument."""
    found = await store.listing(pool, _symbol(symbol))
    if found is None:
        raise ApiError(404, f"{_symbol(symbol)} is not listed")
    return ExactJSONResponse(instrument_view(found.instrument))


@router.put(
    "/instruments/{symbol}",
    response_model=InstrumentView,
    status_code=200,
    responses={201: {"model": InstrumentView, "description": "Listed"}, **error_responses(409)},
)
async def put_instrument(
    admin: AdminUser, units: Units, feed: TheFeed, symbol: SymbolPath, body: InstrumentChangeRequest
) -> ExactJSONResponse:
    """List a new instrument (201) or change one (200): name, tick and lot size, price band, reference
    price; `status` HALTED halts its trading and quotes, OPEN reopens it. Admins only."""
    change = InstrumentChange(
        name=body.name,
        tick_size=body.tickSize,
        lot_size=body.lotSize,
        price_band_percent=body.priceBandPercent,
        status=body.status,
        reference_price=body.referencePrice,
        daily_volatility=body.dailyVolatility,
    )
    listing, created = await _change(units, _symbol(symbol), change, admin.username)
    feed.announce(listing)
    return ExactJSONResponse(instrument_view(listing.instrument), 201 if created else 200)


async def _change(
    units: UnitOfWorkFactory[Instruments], symbol: str, change: InstrumentChange, by: str
) -> tuple[Listing, bool]:
    try:
        async with units() as tx:
            current = await tx.repository.lock(symbol)
            usual = await tx.repository.usual_volatility() or Decimal("0.02")
            try:
                listing = change_listing(symbol, current, change, usual)
            except ChangeRefused as exc:
                raise ApiError(422, str(exc)) from None
            if listing != current:
                tx.repository.save(listing, by=by, new=current is None)
    except WriteConflict:  # another admin listed the same new symbol at the same moment
        raise ApiError(409, f"{symbol} was listed meanwhile: look at it and try again") from None
    return listing, current is None


@router.get("/quotes", response_model=QuoteList)
async def latest_quotes(_: CurrentUser, board: Board, symbols: Symbols = None) -> ExactJSONResponse:
    """The latest quote of each symbol (or of each of `symbol`), as published on the broker."""
    wanted = {_symbol(s) for s in symbols} if symbols else None
    quotes = [quote_view(q) for q in board.quotes() if wanted is None or q.symbol in wanted]
    return ExactJSONResponse({"quotes": quotes})


@router.get(
    "/quotes/stream",
    response_class=EventStreamResponse,
    status_code=200,
    responses={200: {"content": {"text/event-stream": {}}, "description": "`quote` events"}},
)
async def stream_quotes(_: CurrentUser, board: Board, symbols: Symbols = None) -> EventStreamResponse:
    """Server-sent events: a `quote` event with each symbol's latest quote at once, then one for every new
    quote (of `symbol` only, if given). The event id is `<symbol>:<sequence>`."""
    wanted = {_symbol(s) for s in symbols} if symbols else None
    return EventStreamResponse(quote_events(board, wanted))


async def quote_events(board: MarketBoard, wanted: set[str] | None) -> AsyncIterator[bytes]:
    """The events of one stream: the current quotes, then each new one, none twice."""
    queue: asyncio.Queue[Quote] = asyncio.Queue(MAX_STREAM_BEHIND)
    overflowed = asyncio.Event()

    async def listener(quote: Quote) -> None:
        if wanted is None or quote.symbol in wanted:
            try:
                queue.put_nowait(quote)
            except asyncio.QueueFull:
                overflowed.set()

    board.listen(listener)
    sent: dict[str, int] = {}
    try:
        for quote in board.quotes():
            if wanted is None or quote.symbol in wanted:
                sent[quote.symbol] = quote.sequence
                yield sse_event(quote_view(quote), event="quote", event_id=quote.msg_id)
        while not overflowed.is_set():
            quote = await queue.get()
            if quote.sequence > sent.get(quote.symbol, 0):
                sent[quote.symbol] = quote.sequence
                yield sse_event(quote_view(quote), event="quote", event_id=quote.msg_id)
    finally:
        board.unlisten(listener)
