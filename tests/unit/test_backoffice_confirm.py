"""Review and confirm: a confirmation token confirms exactly one review, in one session, for a while."""

from __future__ import annotations

import pytest

from oms.backoffice.confirm import LIFETIME, Review, is_valid, key_from, token_for

KEY = key_from(b"a session key")
REVIEW = Review(
    title="Deposit 250,000.50 TRY for ayse",
    action="/admin/customers/c-1/deposit",
    fields={"asset": "TRY", "amount": "250000.5", "key": "k-1"},
    button="Confirm deposit",
    back="/admin/customers/c-1",
)
NOW = 1_800_000_000.0


def test_the_token_of_a_review_confirms_it() -> None:
    assert is_valid(KEY, "csrf-1", REVIEW, token_for(KEY, "csrf-1", REVIEW, NOW), NOW + 5)


@pytest.mark.parametrize(
    ("csrf", "review", "key", "at"),
    [
        ("csrf-2", REVIEW, KEY, NOW),  # another session
        ("csrf-1", Review(**{**REVIEW.__dict__, "fields": {**REVIEW.fields, "amount": "2500005"}}), KEY, NOW),
        ("csrf-1", Review(**{**REVIEW.__dict__, "action": "/admin/customers/c-2/deposit"}), KEY, NOW),
        ("csrf-1", REVIEW, key_from(b"another back office"), NOW),
        ("csrf-1", REVIEW, KEY, NOW + LIFETIME + 1),  # too late
    ],
    ids=["other session", "other values", "other action", "other key", "expired"],
)
def test_nothing_else_is_confirmed_by_it(csrf: str, review: Review, key: bytes, at: float) -> None:
    token = token_for(KEY, "csrf-1", REVIEW, NOW)
    assert not is_valid(key, csrf, review, token, at)


@pytest.mark.parametrize("token", ["", "garbage", "123", "abc.def", f"{int(NOW) + 60}.{'0' * 64}"])
def test_a_made_up_token_confirms_nothing(token: str) -> None:
    assert not is_valid(KEY, "csrf-1", REVIEW, token, NOW)
