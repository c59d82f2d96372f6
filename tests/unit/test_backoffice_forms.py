"""The back office's forms: a clear message per wrong field, and the body the services get."""

from __future__ import annotations

import pytest

from oms.backoffice.forms import DepositForm, OrderForm, UserForm
from oms.backoffice.views import local_path, order_filters


def test_order_form_gives_the_order_apis_body() -> None:
    form = OrderForm(asset=" aapl ", side="SELL", size="1,000.5", price="12.25")
    assert form.body("c-1") == {
        "customerId": "c-1",
        "assetName": "AAPL",
        "orderSide": "SELL",
        "size": "1000.5",
        "price": "12.25",
    }
    assert form.errors == {}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("asset", "", "Enter the asset's symbol, e.g. AAPL."),
        ("asset", "TRY", "TRY is cash: buy or sell another asset with it."),
        (
            "asset",
            "A$PL",
            "A symbol is 1–12 capital letters, digits or '.', starting with a letter (e.g. AAPL).",
        ),
        ("size", "0", "Size must be greater than 0."),
        ("size", "-1", "Size must be greater than 0."),
        (
            "size",
            "1,5",
            "Size: 1,5 can be read two ways. Use . for decimals (1.5 if that is what you mean); , only "
            "separates thousands in groups of three (250,000.50).",
        ),
        ("size", "", "Enter the size."),
        ("price", "ten", "Price: must be a number such as 1250.50 (digits, . for decimals)."),
        ("side", "HOLD", "Choose BUY or SELL."),
    ],
)
def test_order_form_explains_each_wrong_field(field: str, value: str, message: str) -> None:
    form = OrderForm(**{"asset": "AAPL", "side": "BUY", "size": "1", "price": "1", field: value})
    assert form.body("c-1") is None
    assert form.errors == {field: message}


def test_deposit_form_checks_asset_and_amount() -> None:
    assert DepositForm(asset="try", amount="1000").checked() is not None
    form = DepositForm(asset="try", amount="0")
    assert form.checked() is None
    assert form.errors == {"amount": "Amount must be greater than 0."}


def test_user_form_needs_a_name_a_password_and_a_known_role() -> None:
    form = UserForm(username=" ", role="root")
    assert not form.check("")
    assert set(form.errors) == {"username", "password", "role"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/orders?status=PENDING", "/orders?status=PENDING"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_redirects_stay_on_this_site(value: str | None, expected: str) -> None:
    assert local_path(value) == expected


def test_order_filters_report_every_bad_value() -> None:
    filters = order_filters({"start": "2025-13-01", "end": "2025-01-31", "status": "LOST", "asset": "msft"})
    assert filters.errors == [
        "From: not a date (use YYYY-MM-DD)",
        "Status: one of PENDING, MATCHED, CANCELED",
    ]
    good = order_filters({"start": "2025-01-01", "end": "2025-01-31", "status": "MATCHED", "asset": "msft"})
    assert good.errors == []
    assert good.where.params() == {
        "startDate": "2025-01-01",
        "endDate": "2025-01-31",
        "status": "MATCHED",
        "assetName": "MSFT",
    }
    reversed_range = order_filters({"start": "2025-02-01", "end": "2025-01-01"})
    assert reversed_range.errors == ["From is after To: no orders are shown until the range is put right"]
