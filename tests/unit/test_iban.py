from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oms.account.iban import (
    LENGTHS,
    InvalidIban,
    format_iban,
    iban_problem,
    mask_iban,
    mod97,
    normalize_iban,
    parse_iban,
)

VALID = [
    "TR33 0006 1005 1978 6457 8413 26",
    "DE89 3704 0044 0532 0130 00",
    "GB29 NWBK 6016 1331 9268 19",
    "NL91 ABNA 0417 1643 00",
    "FR14 2004 1010 0505 0001 3M02 606",
    "BE68 5390 0754 7034",
    "CH93 0076 2011 6238 5295 7",
    "ES91 2100 0418 4502 0005 1332",
    "IT60 X054 2811 1010 0000 0123 456",
    "NO93 8601 1117 947",
    "AT61 1904 3002 3457 3201",
    "PL61 1090 1014 0000 0712 1981 2874",
]
TR_IBAN = "TR330006100519786457841326"


@pytest.mark.parametrize("text", VALID)
def test_iban_problem_valid_iban_none(text: str) -> None:
    assert iban_problem(text) is None


def test_parse_iban_spaces_and_lower_case_normalized() -> None:
    assert parse_iban(" tr33 0006 1005 1978 6457 8413 26 ") == TR_IBAN


def test_parse_iban_non_breaking_spaces_normalized() -> None:
    assert parse_iban("TR33\u00a00006\u00a01005\u00a01978\u00a06457\u00a08413\u00a026") == TR_IBAN


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "2-letter country code"),
        ("TR", "2-letter country code"),
        ("TR33-0006-1005", "2-letter country code"),
        ("TR3\uff130006100519786457841326", "2-letter country code"),  # a full-width digit
        ("XX330006100519786457841326", "country XX is not supported"),
        ("TR33000610051978645784132", "TR IBAN has 26 characters, not 25"),
        ("TR3300061005197864578413261", "TR IBAN has 26 characters, not 27"),
        ("TR330006110519786457841326", "account part"),  # the reserved digit is not 0
        ("TR330006100519786457841327", "check digits"),
        ("TR340006100519786457841326", "check digits"),
        ("DE89370400440532013001", "check digits"),
        ("GB29NWBK60161331926818", "check digits"),
        ("DE893704004405320130AB", "account part"),
    ],
)
def test_parse_iban_invalid_iban_refused_with_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidIban, match=message):
        parse_iban(text)


@pytest.mark.parametrize("check", ["00", "01", "99"])
def test_iban_problem_out_of_range_check_digits_refused(check: str) -> None:
    # 00, 01 and 99 can never be computed check digits, whatever the checksum says.
    assert iban_problem(f"TR{check}0006100519786457841326") is not None


def test_lengths_turkey_and_common_european_countries_known() -> None:
    expected = {"TR": 26, "DE": 22, "FR": 27, "GB": 22, "NL": 18, "ES": 24, "IT": 27, "CH": 21, "BE": 16}
    assert {country: LENGTHS[country] for country in expected} == expected


def test_format_iban_printed_in_groups_of_four() -> None:
    assert format_iban(TR_IBAN) == "TR33 0006 1005 1978 6457 8413 26"


def test_mask_iban_only_country_check_and_last_four_shown() -> None:
    assert mask_iban(TR_IBAN) == "TR33 **** 1326"


def test_normalize_iban_removes_blanks_and_upper_cases() -> None:
    assert normalize_iban("gb29 nwbk 6016 1331 9268 19") == "GB29NWBK60161331926819"


@given(st.sampled_from(VALID), st.data())
def test_iban_problem_any_single_character_change_detected(text: str, data: st.DataObject) -> None:
    iban = normalize_iban(text)
    position = data.draw(st.integers(min_value=4, max_value=len(iban) - 1))
    replacement = data.draw(st.sampled_from("0123456789").filter(lambda ch: ch != iban[position]))
    changed = iban[:position] + replacement + iban[position + 1 :]
    assert iban_problem(changed) is not None


# GB and NL account parts start with a four-letter bank code; every other country takes all digits.
@given(st.sampled_from(sorted(set(LENGTHS) - {"GB", "NL"})), st.data())
def test_iban_problem_computed_check_digits_accepted(country: str, data: st.DataObject) -> None:
    bban = data.draw(st.text("0123456789", min_size=LENGTHS[country] - 4, max_size=LENGTHS[country] - 4))
    if country == "TR":
        bban = bban[:5] + "0" + bban[6:]
    check = 98 - mod97(f"{country}00{bban}")
    assert iban_problem(f"{country}{check:02d}{bban}") is None
