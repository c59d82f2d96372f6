"""Amounts as people type them and read them: the back office's one parser for every amount, size and price
field, and how they are shown: cash (TRY) grouped with at least two decimals (250,000.50), sizes and other
assets as entered (1000.5). Whatever is shown can be typed back and reads as the same number.

The declared format (shown in every field's hint): `.` is the decimal point; thousands may be grouped by
`,` or a space (also a thin space) in groups of exactly three. Anything a reader could take two ways is
refused with a message, never guessed: in Turkey `1,5` is one and a half and `1.000` is a thousand, so
`1,5`, `1,00`, `1.000,50` and a lone `1,000` (one thousand here, one in Turkish notation) are all refused,
and so are exponents (`1e3`), signs and a point without digits on both sides.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Final

from babel.numbers import format_decimal

from oms.kernel.money import CASH, MAX_TEXT_LENGTH, InvalidValue, parse_amount, plain

HINT: Final = "Decimals after a point (.); thousands grouped by commas, spaces or not at all: 250,000.50"
SPACES: Final = " \u00a0\u2009\u202f"  # space, no-break space, thin space, narrow no-break space
_PLAIN = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_GROUPED = re.compile(r"[0-9]{1,3}(?:(?P<sep>[, ])[0-9]{3})(?:(?P=sep)[0-9]{3})*(?:\.[0-9]+)?")
_LONE_THOUSANDS = re.compile(r"[0-9]{1,3},[0-9]{3}")  # 1,000: a thousand, or one (Turkish notation)?


class AmountError(ValueError):
    """Text that is not an amount in the declared format; the message says what to type instead."""


def read_amount(text: str, label: str = "Amount") -> Decimal:
    """The positive exact amount `text` says, in the declared format, or AmountError saying why not."""
    typed = text.strip()
    if not typed:
        raise AmountError(f"Enter the {label.lower()}.")
    spaced = "".join(" " if c in SPACES else c for c in typed)
    if len(spaced) > MAX_TEXT_LENGTH:
        raise AmountError(f"{label} is too long.")
    if spaced.startswith("-"):
        raise AmountError(f"{label} must be greater than 0.")
    if not (_PLAIN.fullmatch(spaced) or _GROUPED.fullmatch(spaced)):
        raise AmountError(f"{label}: {_why_not(spaced)}")
    if _LONE_THOUSANDS.fullmatch(spaced):
        whole = spaced.replace(",", "")
        raise AmountError(
            f"{label}: {spaced} is ambiguous (a thousand, or one in Turkish notation). "
            f"Write {whole} or {spaced}.00 for {int(whole):,}; 1.5 for one and a half."
        )
    try:
        return parse_amount(spaced.replace(",", "").replace(" ", ""), field=label)
    except InvalidValue as exc:
        raise AmountError(f"{exc}.") from None


def _why_not(text: str) -> str:
    """What is wrong with text that matches neither form, in words a user can act on."""
    if re.fullmatch(r"[0-9.,]+[eE][+-]?[0-9]+", text):
        return "write the number out in digits (no exponent such as 1e3)."
    if "," in text and re.fullmatch(r"[0-9., ]+", text):
        return (
            f"{text} can be read two ways. Use . for decimals ({_swapped(text)} if that is what you mean); "
            ", only separates thousands in groups of three (250,000.50)."
        )
    if text.count(".") > 1:
        return "use . once, for decimals; group thousands with , (250,000.50)."
    if " " in text and re.fullmatch(r"[0-9. ]+", text):
        return "group thousands in threes (250 000 or 250,000), with . for decimals."
    if text.startswith(".") or text.endswith("."):
        return "put digits on both sides of the decimal point (0.5, 5.0)."
    return "must be a number such as 1250.50 (digits, . for decimals)."


def _swapped(text: str) -> str:
    """`text` read in Turkish notation (`.` thousands, last `,` decimals), written in the declared format."""
    head, _, decimals = text.replace(".", "").replace(" ", "").rpartition(",")
    return f"{head.replace(',', '')}.{decimals}"


def money(value: Decimal | None) -> str:
    """Cash for reading: grouped, at least two decimals, never rounded (1,234.50; 0.125 keeps its 5)."""
    if value is None:
        return ""
    places = max(2, -min(0, _exponent(value)))
    return format_decimal(value, format="#,##0." + "0" * places, locale="en", decimal_quantization=False)


def quantity(value: Decimal | None) -> str:
    """A size or a non-cash amount as entered: its digits, no grouping, no trailing zeros (1000.5)."""
    return "" if value is None else plain(value)


def of_asset(value: Decimal | None, asset: str) -> str:
    """An amount of `asset`: money for cash, a quantity otherwise."""
    return money(value) if asset == CASH else quantity(value)


def _exponent(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


_REASON_ASSET = re.compile(r"\b(?:usable|no) ([A-Z][A-Z0-9.]{0,11})\b")
_NUMBER = re.compile(r"(?<![\w.])[0-9]+(?:\.[0-9]+)?(?![\w.])")


def readable_reason(reason: str | None) -> str:
    """A service's reason with its figures written for reading ("1000 needed" → "1,000.00 needed" for TRY)."""
    if not reason:
        return ""
    found = _REASON_ASSET.search(reason)
    if found is None:
        return reason
    asset = found.group(1)
    return _NUMBER.sub(lambda m: of_asset(Decimal(m.group(0)), asset), reason)
