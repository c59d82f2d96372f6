"""The market as every service sees it: instruments (the security master's rules for one symbol) and quotes.

The market service owns both and publishes them on the broker (stream `OMS_MARKET`): an instrument's current
state on `oms.market.instrument.<SYMBOL>`, each quote on `oms.market.quote.<SYMBOL>`. The order service reads
them to refuse orders the market cannot take (unknown or halted symbol, a price off the tick grid or outside
the band, a size that is not whole lots) and to execute orders at the market's price (SPEC §3b).

These are plain values and pure rules, with their wire form (camelCase JSON, decimals as strings).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Annotated, Final, Protocol

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from oms.kernel.money import EXACT, SYMBOL, Side, plain, refuse_floats
from oms.kernel.topology import SUBJECT_ROOT

MARKET_STREAM: Final = "OMS_MARKET"
MARKET_SUBJECTS: Final = f"{SUBJECT_ROOT}.market.>"
DEFAULT_BAND_PERCENT: Final = Decimal(10)
DEFAULT_COLLAR: Final = Decimal("0.05")


QUOTE_SUBJECT_PREFIX: Final = f"{SUBJECT_ROOT}.market.quote."
INSTRUMENT_SUBJECT_PREFIX: Final = f"{SUBJECT_ROOT}.market.instrument."


def quote_subject(symbol: str) -> str:
    return f"{QUOTE_SUBJECT_PREFIX}{symbol}"


def instrument_subject(symbol: str) -> str:
    return f"{INSTRUMENT_SUBJECT_PREFIX}{symbol}"


Price = Annotated[
    Decimal,
    BeforeValidator(refuse_floats("prices travel as decimal strings")),
    Field(gt=0, allow_inf_nan=False),
    PlainSerializer(plain, return_type=str, when_used="json"),
]
Symbol = Annotated[str, Field(pattern=SYMBOL.pattern)]


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True,
        frozen=True, extra="forbid",
    )  # fmt: skip


class InstrumentStatus(StrEnum):
    OPEN = "OPEN"
    HALTED = "HALTED"


class Instrument(_Wire):
    """One listed symbol and the rules an order for it must follow."""

    symbol: Symbol
    name: str = Field(max_length=200)
    tick_size: Price
    lot_size: Price
    price_band_percent: Annotated[Decimal, Field(gt=0, le=100)] = DEFAULT_BAND_PERCENT
    status: InstrumentStatus = InstrumentStatus.OPEN
    reference_price: Price

    @property
    def is_open(self) -> bool:
        return self.status is InstrumentStatus.OPEN

    def size_problem(self, size: Decimal) -> str | None:
        """Why `size` is not a whole number of lots (None: it is)."""
        if size % self.lot_size != 0:
            return f"size must be a multiple of the lot size {plain(self.lot_size)} of {self.symbol}"
        return None

    def price_problem(self, price: Decimal, last: Decimal | None) -> str | None:
        """Why a limit `price` is refused: off the tick grid, or further than the band from the last price
        (the reference price until the first quote). None: it may be named."""
        if price % self.tick_size != 0:
            return f"price must be a multiple of the tick size {plain(self.tick_size)} of {self.symbol}"
        low, high = self.band(last if last is not None else self.reference_price)
        if not low <= price <= high:
            return (
                f"price {plain(price)} is outside the price band of {self.symbol}: {plain(low)} to"
                f" {plain(high)} ({plain(self.price_band_percent)} % around the last price)"
            )
        return None

    def band(self, around: Decimal) -> tuple[Decimal, Decimal]:
        """The lowest and highest limit price allowed when the last price is `around`, on the tick grid."""
        width = EXACT.divide(EXACT.multiply(around, self.price_band_percent), Decimal(100))
        low = _to_tick(EXACT.subtract(around, width), self.tick_size, up=True)
        high = _to_tick(EXACT.add(around, width), self.tick_size, up=False)
        return max(low, self.tick_size), high


class Quote(_Wire):
    """The market for one symbol at `time`: the best bid and ask and the last traded price.

    `sequence` grows by one per quote of the symbol, so a quote seen twice (or out of order) is recognised."""

    symbol: Symbol
    bid: Price
    ask: Price
    last: Price
    time: AwareDatetime
    sequence: int = Field(ge=1)

    @property
    def msg_id(self) -> str:
        """The broker's deduplication id: a quote published again (a retry) is stored once."""
        return f"{self.symbol}:{self.sequence}"

    def price_for(self, side: Side) -> Decimal:
        """What an order on `side` executes at: a BUY at the ask, a SELL at the bid."""
        return self.ask if side is Side.BUY else self.bid

    def crosses(self, side: Side, limit: Decimal | None) -> bool:
        """True when an order on `side` with `limit` (None: a MARKET order) executes at this quote."""
        if limit is None:
            return True
        return self.ask <= limit if side is Side.BUY else self.bid >= limit


def collared_price(ask: Decimal, collar: Decimal, tick_size: Decimal) -> Decimal:
    """What a MARKET BUY reserves per unit: the ask plus the collar, rounded up to the tick grid."""
    return _to_tick(EXACT.multiply(ask, EXACT.add(Decimal(1), collar)), tick_size, up=True)


def _to_tick(price: Decimal, tick: Decimal, *, up: bool) -> Decimal:
    ticks = EXACT.divide(price, tick).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
    return EXACT.multiply(ticks, tick)


QuoteListener = Callable[[Quote], Awaitable[None]]


class MarketData(Protocol):
    """What a service knows of the market: the instruments and each symbol's latest quote."""

    @property
    def ready(self) -> bool:
        """True once it holds what the market has listed: before, a symbol it does not know may be listed."""

    def instrument(self, symbol: str) -> Instrument | None: ...

    def quote(self, symbol: str) -> Quote | None: ...

    def listen(self, listener: QuoteListener) -> None:
        """Call `listener` with every new quote (each symbol's in sequence order, never one twice)."""


class MarketBoard:
    """MarketData held in memory: filled by whatever reads the market (the broker, a replayed file, a test).

    A quote older than (or the same as) the symbol's latest one is ignored, so a quote delivered twice or
    late changes nothing and reaches no listener."""

    def __init__(self) -> None:
        self._instruments: dict[str, Instrument] = {}
        self._quotes: dict[str, Quote] = {}
        self._listeners: list[QuoteListener] = []

    @property
    def ready(self) -> bool:
        return True  # filled by its owner before it is handed out

    def instrument(self, symbol: str) -> Instrument | None:
        return self._instruments.get(symbol)

    def lists_nothing(self) -> bool:
        return not self._instruments

    def instruments(self) -> list[Instrument]:
        return sorted(self._instruments.values(), key=lambda i: i.symbol)

    def quote(self, symbol: str) -> Quote | None:
        return self._quotes.get(symbol)

    def quotes(self) -> list[Quote]:
        """The latest quote of every symbol that has one, by symbol."""
        return [self._quotes[symbol] for symbol in sorted(self._quotes)]

    def last_price(self, symbol: str) -> Decimal | None:
        """The last traded price, or the reference price before the first quote (None: not listed)."""
        quote, instrument = self._quotes.get(symbol), self._instruments.get(symbol)
        if quote is not None:
            return quote.last
        return instrument.reference_price if instrument else None

    def listen(self, listener: QuoteListener) -> None:
        self._listeners.append(listener)

    def unlisten(self, listener: QuoteListener) -> None:
        """Stop telling `listener` (a stream whose client went away)."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def list_instrument(self, instrument: Instrument) -> None:
        self._instruments[instrument.symbol] = instrument

    async def publish(self, quote: Quote) -> bool:
        """Take `quote` as the latest of its symbol and tell the listeners; False when it is not newer."""
        latest = self._quotes.get(quote.symbol)
        if latest is not None and quote.sequence <= latest.sequence:
            return False
        self._quotes[quote.symbol] = quote
        for listener in self._listeners:
            await listener(quote)
        return True
