from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from oms.kernel.money import (
    MAX_INTEGER_DIGITS,
    MAX_SCALE,
    InvalidValue,
    NonNegativeDecimal,
    PositiveDecimal,
    Symbol,
    add,
    cost,
    parse_amount,
    parse_symbol,
    plain,
    sub,
    symbol_problem,
)

LARGEST = Decimal("99999999999999999999.99999999")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12.5", Decimal("12.5")),
        (" 3.25 ", Decimal("3.25")),
        ("1.10000000000", Decimal("1.1")),
        ("1E+2", Decimal("100")),
        ("100", Decimal("100")),
        (".5", Decimal("0.5")),
        (7, Decimal("7")),
        (0.1, Decimal("0.1")),
        (1e19, Decimal("10000000000000000000")),
        (Decimal("0.00000001"), Decimal("0.00000001")),
        (str(LARGEST), LARGEST),
    ],
)
def test_parse_amount_valid_input_gives_exact_decimal(value: object, expected: Decimal) -> None:
    parsed = parse_amount(value)
    assert parsed == expected
    assert str(parsed) == str(expected)  # no exponent form, no stray trailing zeros


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("NaN", "decimal number"),
        ("Infinity", "decimal number"),
        ("-inf", "decimal number"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (Decimal("NaN"), "finite"),
        ("-1", "negative"),
        (-0.5, "negative"),
        ("0", "greater than 0"),
        ("-0", "greater than 0"),
        ("0.000000001", f"{MAX_SCALE} decimal places"),
        ("1" + "0" * MAX_INTEGER_DIGITS, r"less than 10\^20"),
        ("1e20", r"less than 10\^20"),
        ("1e-99999999999999999999999", "out of range"),
        ("1_000", "decimal number"),
        ("١٢", "decimal number"),  # Arabic-Indic digits: Decimal would accept them
        ("", "decimal number"),
        ("1" * 65, "decimal number"),
        (True, "must be a number"),
        (None, "number or a decimal string"),
        ([1], "number or a decimal string"),
        (0.30000000000000004, "send it as a string"),
    ],
)
def test_parse_amount_bad_input_refused_with_reason(value: object, message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        parse_amount(value)


def test_parse_amount_zero_allowed_gives_plain_zero() -> None:
    assert str(parse_amount("-0.000", allow_zero=True)) == "0"


def test_parse_amount_field_name_in_message() -> None:
    with pytest.raises(InvalidValue, match=r"^price must be greater than 0$"):
        parse_amount("0", field="price")


@given(st.decimals(min_value=0, max_value=LARGEST, places=MAX_SCALE, allow_nan=False, allow_infinity=False))
def test_parse_amount_plain_text_round_trips_exactly(value: Decimal) -> None:
    assert parse_amount(plain(value), allow_zero=True) == value


def test_cost_large_operands_exact_product() -> None:
    product = cost(LARGEST, LARGEST)
    scaled = int(LARGEST.scaleb(MAX_SCALE))
    assert product == Decimal((0, tuple(int(d) for d in str(scaled**2)), -2 * MAX_SCALE))  # integer math
    assert product != LARGEST * LARGEST  # what the default 28-digit context would have rounded to
    assert plain(product) == "9999999999999999999999999998000000000000.0000000000000001"


def test_add_and_sub_beyond_28_digits_exact() -> None:
    total = add(LARGEST, Decimal("10000000000000000000.00000001"))
    assert plain(total) == "110000000000000000000"
    assert sub(total, LARGEST) == Decimal("10000000000000000000.00000001")


@pytest.mark.parametrize(
    ("number", "text"),
    [(Decimal("1E+2"), "100"), (Decimal("-0.00"), "0"), (Decimal("1.50"), "1.5"), (Decimal("0E-8"), "0")],
)
def test_plain_any_decimal_gives_text_without_exponent(number: Decimal, text: str) -> None:
    assert plain(number) == text


@pytest.mark.parametrize("name", ["AAPL", "TRY", "BRK.B", "A", "THYAO", "X1234567890A"])
def test_symbol_problem_valid_symbol_none(name: str) -> None:
    assert symbol_problem(name) is None


@pytest.mark.parametrize("name", ["", "aapl", "1ABC", ".A", "A-B", "ABCDEFGHIJKLM", "AAPL ", "ÄPL"])
def test_symbol_problem_invalid_symbol_reason(name: str) -> None:
    assert "asset name" in (symbol_problem(name) or "")


def test_parse_symbol_lower_case_with_blanks_normalized() -> None:
    assert parse_symbol("  aapl ") == "AAPL"


def test_parse_symbol_not_a_string_refused() -> None:
    with pytest.raises(InvalidValue):
        parse_symbol(12)


class _Body(BaseModel):
    size: PositiveDecimal
    usable: NonNegativeDecimal
    asset: Symbol


def test_pydantic_types_valid_body_parsed() -> None:
    body = _Body.model_validate({"size": "1.5", "usable": 0, "asset": "aapl"})
    assert (body.size, body.usable, body.asset) == (Decimal("1.5"), Decimal(0), "AAPL")


def test_pydantic_types_nan_refused_as_validation_error() -> None:
    with pytest.raises(ValidationError, match="decimal number"):
        _Body.model_validate({"size": "NaN", "usable": 0, "asset": "AAPL"})


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("1." + "0" * 62, "1"),  # 64 characters: the longest text read
        (1234567.12345678, "1234567.12345678"),  # 15 significant digits: a float still says what was sent
        ("0.000000010", "0.00000001"),  # a trailing zero beyond the 8 places does not count
        ("1.10", "1.1"),
        ("7", "7"),
    ],
)
def test_parse_amount_at_the_limits_accepted_exactly(value: object, text: str) -> None:
    parsed = parse_amount(value)
    assert parsed == Decimal(text) and plain(parsed) == text


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1e21", "size must be less than 10^20"),
        ("0.000000001", "size must have at most 8 decimal places"),
        (1234567.123456789, "size has too many digits for a JSON number; send it as a string"),
        (float("inf"), "size must be a finite number"),
        ("-2", "size must not be negative"),
        ("abc", "size must be a decimal number such as 12.5"),
    ],
)
def test_parse_amount_refusals_name_the_field(value: object, message: str) -> None:
    with pytest.raises(InvalidValue) as refused:
        parse_amount(value, field="size")
    assert str(refused.value) == message


def test_pydantic_types_zero_size_refused_and_the_client_told_why() -> None:
    with pytest.raises(ValidationError, match="value must be greater than 0"):
        _Body.model_validate({"size": "0", "usable": 0, "asset": "AAPL"})


def test_symbol_problem_says_what_a_symbol_is_quoting_at_most_20_characters() -> None:
    assert symbol_problem("a" * 30) == (
        "asset name 'aaaaaaaaaaaaaaaaaaaa' must be 1-12 characters: an upper-case letter, then upper-case "
        "letters, digits or '.'"
    )


@pytest.mark.parametrize(
    ("value", "message"), [(12, "asset name must be a string"), ("a-b", "asset name 'A-B'")]
)
def test_parse_symbol_refuses_what_is_not_a_symbol_and_says_why(value: object, message: str) -> None:
    with pytest.raises(InvalidValue) as refused:
        parse_symbol(value)
    assert str(refused.value).startswith(message)
