"""IBAN validation (ISO 13616): country, that country's length, the BBAN's shape, and the mod-97 check."""

from __future__ import annotations

import re
from typing import Final

# IBAN lengths from the SWIFT IBAN registry. Countries not listed do not issue IBANs (or are not supported).
LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

# The BBAN's layout where we check more than "letters and digits" (n = digits, c = letters or digits).
BBAN_SHAPES: Final[dict[str, re.Pattern[str]]] = {
    "TR": re.compile(r"[0-9]{5}0[A-Z0-9]{16}"),  # 5n bank code, one reserved "0", 16c account
    "DE": re.compile(r"[0-9]{18}"),  # 8n bank code (BLZ), 10n account
    "GB": re.compile(r"[A-Z]{4}[0-9]{14}"),  # 4a bank, 6n sort code, 8n account
    "NL": re.compile(r"[A-Z]{4}[0-9]{10}"),  # 4a bank, 10n account
    "FR": re.compile(r"[0-9]{10}[A-Z0-9]{11}[0-9]{2}"),  # 5n bank, 5n branch, 11c account, 2n RIB key
}

_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+")
_SEPARATORS = re.compile(r"[ \t\u00a0]+")  # as printed: groups of four, sometimes with non-breaking spaces


class InvalidIban(ValueError):
    """The message says what is wrong, for the client."""


def normalize_iban(text: str) -> str:
    """The IBAN without blanks, upper-cased (its electronic form)."""
    return _SEPARATORS.sub("", text).upper()


def iban_problem(text: str) -> str | None:
    """Why `text` is not a valid IBAN, or None."""
    iban = normalize_iban(text)
    if not _SHAPE.fullmatch(iban):
        return "IBAN must be a 2-letter country code, 2 check digits, then letters and digits"
    country, bban = iban[:2], iban[4:]
    expected = LENGTHS.get(country)
    if expected is None:
        return f"IBAN country {country} is not supported"
    if len(iban) != expected:
        return f"a {country} IBAN has {expected} characters, not {len(iban)}"
    shape = BBAN_SHAPES.get(country)
    if shape and not shape.fullmatch(bban):
        return f"the account part of this {country} IBAN is malformed"
    if not 2 <= int(iban[2:4]) <= 98 or mod97(iban) != 1:
        return "IBAN check digits do not match (mistyped?)"
    return None


def parse_iban(text: str) -> str:
    """The normalized IBAN, or `InvalidIban` with the reason."""
    problem = iban_problem(text)
    if problem:
        raise InvalidIban(problem)
    return normalize_iban(text)


def mod97(iban: str) -> int:
    """ISO 7064 MOD 97-10 of an IBAN: the first four characters moved to the end, letters as 10..35."""
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97


def format_iban(iban: str) -> str:
    """The printed form: groups of four characters."""
    plain = normalize_iban(iban)
    return " ".join(plain[i : i + 4] for i in range(0, len(plain), 4))


def mask_iban(iban: str) -> str:
    """For logs and screens: country, check digits and the last four characters only."""
    plain = normalize_iban(iban)
    return f"{plain[:4]} **** {plain[-4:]}"
