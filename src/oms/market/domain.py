"""The security master's rules: what an instrument listed by the market service holds, and how an admin
lists, changes, halts and reopens one. Plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from pydantic import ValidationError

from oms.kernel.market import DEFAULT_BAND_PERCENT, Instrument, InstrumentStatus
from oms.kernel.money import CASH
from oms.market.reference import US_LOT, US_TICK, Reference


class ChangeRefused(ValueError):
    """An instrument change the rules do not allow; the message says why, for the admin."""


@dataclass(frozen=True, slots=True)
class Listing:
    """An instrument as the market service keeps it: the public rules, and what the sim moves it with.

    `version` grows by one with every change; the broker deduplicates an instrument's publication by it."""

    instrument: Instrument
    daily_volatility: Decimal
    version: int = 1

    @property
    def symbol(self) -> str:
        return self.instrument.symbol

    @property
    def msg_id(self) -> str:
        return f"instrument:{self.symbol}:{self.version}"


@dataclass(frozen=True, slots=True)
class InstrumentChange:
    """What an admin asks to set (None: keep as it is, or the default for a new instrument)."""

    name: str | None = None
    tick_size: Decimal | None = None
    lot_size: Decimal | None = None
    price_band_percent: Decimal | None = None
    status: InstrumentStatus | None = None
    reference_price: Decimal | None = None
    daily_volatility: Decimal | None = None


def listing_of(reference: Reference) -> Listing:
    """A symbol of the shipped data set, listed OPEN with the US tick and lot."""
    instrument = Instrument(
        symbol=reference.symbol,
        name=reference.name,
        tick_size=US_TICK,
        lot_size=US_LOT,
        reference_price=reference.reference_price,
    )
    return Listing(instrument, reference.daily_volatility)


def change_listing(
    symbol: str, current: Listing | None, change: InstrumentChange, usual_volatility: Decimal
) -> Listing:
    """`current` (None: not listed yet) with `change` applied, or ChangeRefused. A new instrument needs a
    name and a reference price; it moves with `usual_volatility` unless one is given."""
    if symbol == CASH:
        raise ChangeRefused(f"{CASH} is the cash asset, not an instrument")
    if current is None:
        return Listing(_new_instrument(symbol, change), change.daily_volatility or usual_volatility)
    fields = {k: v for k, v in _instrument_fields(change).items() if v is not None}
    instrument = _valid(current.instrument.model_dump(by_alias=False) | fields)
    volatility = change.daily_volatility if change.daily_volatility is not None else current.daily_volatility
    changed = replace(current, instrument=instrument, daily_volatility=volatility)
    return changed if changed == current else replace(changed, version=current.version + 1)


def _new_instrument(symbol: str, change: InstrumentChange) -> Instrument:
    if change.name is None or change.reference_price is None:
        raise ChangeRefused(f"{symbol} is not listed: a new instrument needs a name and a reference price")
    defaults = {
        "tick_size": US_TICK,
        "lot_size": US_LOT,
        "price_band_percent": DEFAULT_BAND_PERCENT,
        "status": InstrumentStatus.OPEN,
    }
    given = {k: v for k, v in _instrument_fields(change).items() if v is not None}
    return _valid({"symbol": symbol, **defaults, **given})


def _instrument_fields(change: InstrumentChange) -> dict[str, object]:
    return {
        "name": change.name,
        "tick_size": change.tick_size,
        "lot_size": change.lot_size,
        "price_band_percent": change.price_band_percent,
        "status": change.status,
        "reference_price": change.reference_price,
    }


def _valid(fields: dict[str, object]) -> Instrument:
    try:
        instrument = Instrument.model_validate(fields)
    except ValidationError as exc:
        raise ChangeRefused(exc.errors()[0]["msg"]) from None
    if instrument.reference_price % instrument.tick_size != 0:
        raise ChangeRefused(
            f"the reference price {instrument.reference_price} is not a multiple of the tick size"
            f" {instrument.tick_size}"
        )
    return instrument
