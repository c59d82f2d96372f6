"""Exact money and sizes: parsing decimals from JSON, exact arithmetic, asset symbols, an order's side, type
and time in force.

Sizes, prices and amounts are `Decimal`s, never floats. Inputs carry at most `MAX_SCALE` decimal places and
`MAX_INTEGER_DIGITS` digits before the point; anything finer is refused, never rounded. Products and sums are
computed in the `EXACT` context, which raises instead of rounding: a cost `size * price` keeps all of its
(up to `2 * MAX_SCALE`) decimal places, and the database stores it in an unconstrained NUMERIC.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import (
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from enum import StrEnum
from typing import Annotated, Final

from pydantic import BeforeValidator

CASH: Final = "TRY"  # the cash asset: what BUY orders pay with and SELL orders are paid in
SYMBOL: Final = re.compile(r"[A-Z][A-Z0-9.]{0,11}")

MAX_SCALE: Final = 8  # decimal places of a size, price or amount as entered
MAX_INTEGER_DIGITS: Final = 20  # digits before the point: values below 10**20
MAX_TEXT_LENGTH: Final = 64  # longer inputs are refused before `Decimal` parses them
FLOAT_DIGITS: Final = 15  # significant digits a JSON number survives a float round trip with (DBL_DIG)

# Far more precision than any balance can need (40 integer + 16 decimal digits, plus sums), and a trap on
# Inexact: if that were ever not enough, the operation fails instead of silently rounding money.
EXACT: Final = Context(prec=120, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])

_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # ASCII digits only


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    LIMIT = "LIMIT"  # executes at its price or better
    MARKET = "MARKET"  # no price: executes at once at the market's, or not at all


class TimeInForce(StrEnum):
    GTC = "GTC"  # good till canceled
    DAY = "DAY"  # canceled ("expired") at the market's close
    IOC = "IOC"  # immediate or cancel: what cannot execute when its funds are reserved is canceled


class InvalidValue(ValueError):
    """An input that is not an acceptable decimal or symbol; the message says why, for the client."""


def parse_amount(value: object, *, field: str = "value", allow_zero: bool = False) -> Decimal:
    """An exact decimal from a JSON number or string; refuses NaN, infinities, negatives, excess digits."""
    number = _to_decimal(value, field)
    if number.is_zero():
        if not allow_zero:
            raise InvalidValue(f"{field} must be greater than 0")
        return Decimal(0)
    if number < 0:
        raise InvalidValue(f"{field} must not be negative")
    return _within_limits(number, field)


def parse_positive(value: object) -> Decimal:
    """`parse_amount` for values that must be > 0 (sizes, prices, withdrawals)."""
    return parse_amount(value, allow_zero=False)


def parse_non_negative(value: object) -> Decimal:
    """`parse_amount` for values that may be 0 (deposit sizes)."""
    return parse_amount(value, allow_zero=True)


def _to_decimal(value: object, field: str) -> Decimal:
    if isinstance(value, bool):  # bool is an int: `true` is not a size
        raise InvalidValue(f"{field} must be a number")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = _from_float(value, field)
    elif isinstance(value, str):
        number = _from_text(value, field)
    else:
        raise InvalidValue(f"{field} must be a number or a decimal string")
    if not number.is_finite():
        raise InvalidValue(f"{field} must be a finite number")
    return number


def _from_float(value: float, field: str) -> Decimal:
    if not math.isfinite(value):
        raise InvalidValue(f"{field} must be a finite number")
    number = Decimal(repr(value))  # the shortest text that reads back as this float: what the client wrote
    if len(_significant(number)[0]) > FLOAT_DIGITS:
        # With 16-17 significant digits the float may no longer be what the client sent.
        raise InvalidValue(f"{field} has too many digits for a JSON number; send it as a string")
    return number


def _from_text(value: str, field: str) -> Decimal:
    text = value.strip()
    if len(text) > MAX_TEXT_LENGTH or not _DECIMAL_TEXT.fullmatch(text):
        raise InvalidValue(f"{field} must be a decimal number such as 12.5")
    try:
        return Decimal(text)
    except (InvalidOperation, ValueError) as exc:  # exponents beyond what decimal can represent
        raise InvalidValue(f"{field} is out of range") from exc


def _significant(number: Decimal) -> tuple[tuple[int, ...], int]:
    """The digits without trailing zeros, and the exponent that goes with them (no context involved)."""
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite numbers have an integer exponent
    kept = len(digits)
    while kept > 1 and digits[kept - 1] == 0:
        kept -= 1
    return digits[:kept], exponent + len(digits) - kept


def _within_limits(number: Decimal, field: str) -> Decimal:
    if number.adjusted() >= MAX_INTEGER_DIGITS:
        raise InvalidValue(f"{field} must be less than 10^{MAX_INTEGER_DIGITS}")
    digits, exponent = _significant(number)  # trailing zeros do not count against the scale
    if exponent < -MAX_SCALE:
        raise InvalidValue(f"{field} must have at most {MAX_SCALE} decimal places")
    if exponent >= 0:  # an integer: keep the plain form (100, not 1E+2)
        return Decimal(int(number))
    return Decimal((0, digits, exponent))


def cost(size: Decimal, price: Decimal) -> Decimal:
    """size * price, exactly (no rounding)."""
    return EXACT.multiply(size, price)


def add(a: Decimal, b: Decimal) -> Decimal:
    """a + b, exactly."""
    return EXACT.add(a, b)


def sub(a: Decimal, b: Decimal) -> Decimal:
    """a - b, exactly."""
    return EXACT.subtract(a, b)


def plain(number: Decimal) -> str:
    """The decimal as plain text without exponent or trailing zeros, e.g. for a JSON number."""
    text = format(number.normalize(EXACT), "f")
    return "0" if text in ("-0", "0") else text


def refuse_floats(how_they_travel: str) -> Callable[[object], object]:
    """A validator for decimals that travel between services as strings: a float has already been rounded by
    whoever sent it. The refusal reads "<how_they_travel>, never as floating-point numbers"."""

    def check(value: object) -> object:
        if isinstance(value, float):
            raise ValueError(f"{how_they_travel}, never as floating-point numbers")
        return value

    return check


def symbol_problem(name: str) -> str | None:
    """Why `name` is not an asset symbol, or None (`TRY` is a valid symbol: the cash asset)."""
    if not SYMBOL.fullmatch(name):
        return (
            f"asset name {name[:20]!r} must be 1-12 characters: an upper-case letter, then upper-case "
            "letters, digits or '.'"
        )
    return None


def parse_symbol(value: object) -> str:
    """An asset symbol from client input: surrounding blanks dropped, upper-cased, then checked."""
    if not isinstance(value, str):
        raise InvalidValue("asset name must be a string")
    name = value.strip().upper()
    problem = symbol_problem(name)
    if problem:
        raise InvalidValue(problem)
    return name


# Request-model field types: the parsers above as pydantic validators (a ValueError becomes a 422).
PositiveDecimal = Annotated[Decimal, BeforeValidator(parse_positive)]
NonNegativeDecimal = Annotated[Decimal, BeforeValidator(parse_non_negative)]
Symbol = Annotated[str, BeforeValidator(parse_symbol)]
