"""The back office's one reading of typed amounts: the declared format, and a clear refusal of anything a
reader could take two ways (in Turkey 1,5 is one and a half); TRY shown grouped with two decimals."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oms.backoffice.amounts import AmountError, money, quantity, read_amount, readable_reason


@pytest.mark.parametrize(
    ("typed", "value"),
    [
        ("1.5", "1.5"),
        ("250000.50", "250000.5"),
        ("250,000.50", "250000.5"),
        ("250 000.50", "250000.5"),
        ("250\u2009000", "250000"),  # thin space
        ("1,234,567", "1234567"),
        ("1,000.00", "1000"),
        (" 42 ", "42"),
        ("0.00000001", "0.00000001"),
    ],
)
def test_the_declared_format_reads_exactly(typed: str, value: str) -> None:
    assert read_amount(typed) == Decimal(value)


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("1,5", "1.5 if that is what you mean"),
        ("1,00", "1.00 if that is what you mean"),
        ("1.000,50", "1000.50 if that is what you mean"),
        ("1,000", "ambiguous"),
        ("250,000", "Write 250000 or 250,000.00"),
        ("1e3", "no exponent"),
        ("1.000.000", "use . once"),
        ("1 00", "threes"),
        ("1,000 000", "can be read two ways"),
        (".5", "digits on both sides"),
        ("5.", "digits on both sides"),
        ("-3", "must be greater than 0"),
        ("0", "must be greater than 0"),
        ("ten", "must be a number"),
        ("0.000000001", "at most 8 decimal places"),
        ("", "Enter the amount"),
    ],
)
def test_anything_ambiguous_or_malformed_is_refused_with_what_to_type(typed: str, says: str) -> None:
    with pytest.raises(AmountError, match=says.replace(".", r"\.").replace("(", r"\(")):
        read_amount(typed)


def test_the_message_names_the_field() -> None:
    with pytest.raises(AmountError, match=r"^Price: 1,5 can be read two ways"):
        read_amount("1,5", "Price")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("250000.5", "250,000.50"),
        ("1000", "1,000.00"),
        ("0.125", "0.125"),  # never rounded away
        ("-3", "-3.00"),
        ("0", "0.00"),
    ],
)
def test_money_has_grouping_and_at_least_two_decimals(value: str, shown: str) -> None:
    assert money(Decimal(value)) == shown


def test_sizes_are_shown_as_entered() -> None:
    assert quantity(Decimal("1000.50")) == "1000.5"
    assert quantity(Decimal("3")) == "3"


amounts = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal(10**15), places=8)


@given(amounts)
def test_what_is_shown_reads_back_as_the_same_number(value: Decimal) -> None:
    assert read_amount(money(value)) == value
    assert read_amount(quantity(value)) == value


def test_reasons_show_their_figures_for_reading() -> None:
    reason = "insufficient usable TRY: 1000 needed, 699.7 usable"
    assert readable_reason(reason) == "insufficient usable TRY: 1,000.00 needed, 699.70 usable"
    assert readable_reason("no AAPL held: 5 AAPL needed") == "no AAPL held: 5 AAPL needed"
    assert readable_reason("canceled by admin") == "canceled by admin"
