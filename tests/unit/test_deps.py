"""The shared request dependencies on their own: dates as clients must write them, and whose account a
caller may name (tests/integration/test_own_customer.py checks the same over HTTP on the real routes)."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from pydantic import TypeAdapter, ValidationError

from oms.kernel.deps import IsoDate, own_customer
from oms.kernel.errors import ApiError
from oms.kernel.tokens import Principal, Role

DATES = TypeAdapter(IsoDate)
ME, SOMEONE = uuid.uuid4(), uuid.uuid4()


def principal(role: Role, user_id: uuid.UUID = ME) -> Principal:
    return Principal(str(user_id), "someone", role, "token-id", 0, 0.0)


def test_a_date_written_as_yyyy_mm_dd_is_read() -> None:
    assert DATES.validate_python("2024-02-29") == date(2024, 2, 29)


@pytest.mark.parametrize(
    "value", [0, 1_700_000_000, "2024-01-01T00:00", "2024-1-1", " 2024-01-01", "20240101"]
)
def test_anything_else_pydantic_would_read_as_a_date_is_refused(value: object) -> None:
    with pytest.raises(ValidationError) as refused:
        DATES.validate_python(value)
    assert [e["msg"] for e in refused.value.errors()] == ["Value error, must be a date as YYYY-MM-DD"]


def test_a_customer_acts_on_their_own_account_named_or_not() -> None:
    assert own_customer(principal(Role.CUSTOMER), ME) == ME
    assert own_customer(principal(Role.CUSTOMER), None) == ME


def test_a_customer_naming_another_customer_is_refused_with_403() -> None:
    with pytest.raises(ApiError) as refused:
        own_customer(principal(Role.CUSTOMER), SOMEONE)
    assert (refused.value.status_code, refused.value.error) == (
        403,
        "customers may only act on their own account",
    )


def test_an_admin_acts_on_the_customer_named_or_on_everyone() -> None:
    assert own_customer(principal(Role.ADMIN), SOMEONE) == SOMEONE
    assert own_customer(principal(Role.ADMIN), None) is None
