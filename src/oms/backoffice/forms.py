"""The back office's forms: what was typed (shown again on an error) and a message per field that is wrong.
The services check everything again; these checks only make the messages clear and immediate."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated

from fastapi import Depends, Form

from oms.backoffice.amounts import AmountError, read_amount
from oms.kernel.money import CASH, SYMBOL


def new_key() -> str:
    """An idempotency key for one form: submitting it twice creates one order (or deposit)."""
    return str(uuid.uuid4())


def symbol_error(asset: str) -> str | None:
    if not asset:
        return "Enter the asset's symbol, e.g. AAPL."
    if not SYMBOL.fullmatch(asset):
        return "A symbol is 1–12 capital letters, digits or '.', starting with a letter (e.g. AAPL)."
    return None


def amount_error(text: str, label: str) -> tuple[Decimal | None, str | None]:
    """The positive amount typed in (the declared format of `amounts`), or why it is not one."""
    try:
        return read_amount(text, label), None
    except AmountError as exc:
        return None, str(exc)


@dataclass
class OrderForm:
    asset: str = ""
    side: str = "BUY"
    size: str = ""
    price: str = ""
    key: str = field(default_factory=new_key)
    errors: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  # the order service's refusal, for the whole form
    size_value: Decimal = Decimal(0)  # as read, once `body` found the form valid
    price_value: Decimal = Decimal(0)

    def body(self, customer_id: str) -> dict[str, str] | None:
        """The order API's request body, or None with `errors` filled in."""
        self.asset = self.asset.strip().upper()
        asset_error = symbol_error(self.asset)
        if asset_error is None and self.asset == CASH:
            asset_error = f"{CASH} is cash: buy or sell another asset with it."
        if asset_error:
            self.errors["asset"] = asset_error
        if self.side not in ("BUY", "SELL"):
            self.errors["side"] = "Choose BUY or SELL."
        size, size_error = amount_error(self.size.strip(), "Size")
        price, price_error = amount_error(self.price.strip(), "Price")
        for name, error in (("size", size_error), ("price", price_error)):
            if error:
                self.errors[name] = error
        if self.errors or size is None or price is None:
            return None
        self.size_value, self.price_value = size, price
        return {
            "customerId": customer_id,
            "assetName": self.asset,
            "orderSide": self.side,
            "size": str(size),
            "price": str(price),
        }


@dataclass
class DepositForm:
    asset: str = CASH
    amount: str = ""
    key: str = field(default_factory=new_key)
    errors: dict[str, str] = field(default_factory=dict)
    problem: str | None = None

    def checked(self) -> tuple[str, Decimal] | None:
        """(asset, amount), or None with `errors` filled in."""
        self.asset = self.asset.strip().upper()
        asset_error = symbol_error(self.asset)
        if asset_error:
            self.errors["asset"] = asset_error
        value, error = amount_error(self.amount.strip(), "Amount")
        if error:
            self.errors["amount"] = error
        return None if self.errors or value is None else (self.asset, value)


@dataclass
class WithdrawalForm:
    amount: str = ""
    iban: str = ""
    key: str = field(default_factory=new_key)
    errors: dict[str, str] = field(default_factory=dict)
    problem: str | None = None

    def checked(self) -> tuple[Decimal, str] | None:
        """(amount, IBAN), or None with `errors` filled in (the account service checks the IBAN itself)."""
        value, error = amount_error(self.amount.strip(), "Amount")
        if error:
            self.errors["amount"] = error
        self.iban = " ".join(self.iban.split()).upper()
        if not self.iban:
            self.errors["iban"] = "Enter the IBAN of the account to pay into, e.g. TR33 0006 1005 …"
        return None if self.errors or value is None else (value, self.iban)


@dataclass
class UserForm:
    username: str = ""
    role: str = "customer"
    errors: dict[str, str] = field(default_factory=dict)
    problem: str | None = None

    def check(self, password: str) -> bool:
        if not self.username.strip():
            self.errors["username"] = "Enter a username."
        if not password:
            self.errors["password"] = "Enter a password."
        if self.role not in ("customer", "admin"):
            self.errors["role"] = "Choose customer or admin."
        return not self.errors


# --- the forms as sent: FastAPI dependencies that read them from the request body --------------------------

Key = Annotated[str, Form(max_length=200)]
Text = Annotated[str, Form()]


def order_form(
    asset: Text = "", side: Text = "", size: Text = "", price: Text = "", key: Key = ""
) -> OrderForm:
    return OrderForm(asset=asset, side=side, size=size, price=price, key=key or new_key())


def deposit_form(asset: Text = CASH, amount: Text = "", key: Key = "") -> DepositForm:
    return DepositForm(asset=asset, amount=amount, key=key or new_key())


def withdrawal_form(
    amount: Text = "", iban: Annotated[str, Form(max_length=64)] = "", key: Key = ""
) -> WithdrawalForm:
    return WithdrawalForm(amount=amount, iban=iban, key=key or new_key())


@dataclass(frozen=True)
class Step:
    """A button on an order or a request: where to go back to, and the review's confirmation token."""

    next: str
    token: str


def step(next: Text = "", confirm_token: Annotated[str, Form(max_length=200)] = "") -> Step:
    return Step(next, confirm_token)


OrderFields = Annotated[OrderForm, Depends(order_form)]
DepositFields = Annotated[DepositForm, Depends(deposit_form)]
WithdrawalFields = Annotated[WithdrawalForm, Depends(withdrawal_form)]
StepFields = Annotated[Step, Depends(step)]
