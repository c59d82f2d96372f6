"""The admins' instruments page: every listed instrument, halting and reopening one, and listing a new one or
changing one's rules (tick, lot, band, reference price), all through the market service's API."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from oms.backoffice.forms import amount_error, symbol_error
from oms.backoffice.services import ServiceError
from oms.backoffice.sessions import SignedInAdmin, require_csrf, signed_in_admin
from oms.backoffice.trail import done_and_recorded
from oms.backoffice.views import ServicesDep, render
from oms.kernel.market import Instrument, InstrumentStatus

router = APIRouter(
    prefix="/admin/instruments", dependencies=[Depends(require_csrf), Depends(signed_in_admin)]
)
# What the form's fields set, by the field's name in the form and in the market's API.
NUMBERS = (
    ("tick", "tickSize", "Tick size"),
    ("lot", "lotSize", "Lot size"),
    ("band", "priceBandPercent", "Price band %"),
    ("reference", "referencePrice", "Reference price"),
)


@dataclass
class InstrumentForm:
    """What an admin typed to list or change an instrument; blank fields keep their value."""

    symbol: str = ""
    name: str = ""
    tick: str = ""
    lot: str = ""
    band: str = ""
    reference: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  # the market service's refusal

    def body(self) -> dict[str, str] | None:
        """The market API's request body (only the fields filled in), or None with `errors` filled in."""
        self.symbol = self.symbol.strip().upper()
        if problem := symbol_error(self.symbol):
            self.errors["symbol"] = problem
        body = {"name": self.name.strip()} if self.name.strip() else {}
        for name, key, label in NUMBERS:
            text = getattr(self, name).strip()
            if not text:
                continue
            number, problem = amount_error(text, label)
            if problem:
                self.errors[name] = problem
            elif isinstance(number, Decimal):
                body[key] = str(number)
        return None if self.errors else body


def _matching(instruments: list[Instrument], search: str) -> list[Instrument]:
    wanted = search.strip().lower()
    return [i for i in instruments if wanted in i.symbol.lower() or wanted in i.name.lower()]


async def _page(
    request: Request, login: SignedInAdmin, services: ServicesDep, form: InstrumentForm, status: int = 200
) -> Response:
    search = request.query_params.get("q", "")
    instruments = await services.instruments(login.token)
    context = {
        "instruments": _matching(instruments, search),
        "listed": len(instruments),
        "halted": sum(not i.is_open for i in instruments),
        "search": search,
        "form": form,
    }
    return render(request, "admin/instruments.html", context, status)


@router.get("")
async def instruments_page(request: Request, login: SignedInAdmin, services: ServicesDep) -> Response:
    """Every instrument (or those whose symbol or name has `q`), and the form to list or change one."""
    return await _page(request, login, services, InstrumentForm())


@router.post("")
async def change_instrument(
    request: Request,
    login: SignedInAdmin,
    services: ServicesDep,
    symbol: Annotated[str, Form(max_length=20)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    tick: Annotated[str, Form(max_length=64)] = "",
    lot: Annotated[str, Form(max_length=64)] = "",
    band: Annotated[str, Form(max_length=64)] = "",
    reference: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """List a new instrument, or change the given fields of a listed one."""
    form = InstrumentForm(symbol, name, tick, lot, band, reference)
    body = form.body()
    if body is None:
        return await _page(request, login, services, form, 422)
    try:
        await services.change_instrument(login.token, form.symbol, body)
    except ServiceError as exc:
        if exc.status >= 500:
            raise
        form.problem = exc.message
        return await _page(request, login, services, form, exc.status)
    text = f"{form.symbol} saved ({_changes(body)}): the market publishes it at once."
    target = ("instrument", form.symbol, form.symbol)
    return await done_and_recorded(
        request, services, login, "change instrument", target, text, _showing(form.symbol)
    )


@router.post("/{symbol}/{action}")
async def halt_or_reopen(
    request: Request, symbol: str, action: str, login: SignedInAdmin, services: ServicesDep
) -> Response:
    """Halt an instrument's trading and quotes (`halt`), or reopen it (`reopen`)."""
    statuses = {"halt": InstrumentStatus.HALTED, "reopen": InstrumentStatus.OPEN}
    if action not in statuses:
        raise ServiceError(404, "no such action")
    await services.change_instrument(login.token, symbol, {"status": statuses[action].value})
    text = (
        f"{symbol} halted: no quotes, no new orders until reopened."
        if action == "halt"
        else f"{symbol} reopened."
    )
    target = ("instrument", symbol, symbol)
    return await done_and_recorded(
        request, services, login, f"{action} instrument", target, text, _showing(symbol)
    )


def _changes(body: dict[str, str]) -> str:
    """What the form set, in the form's words: "tick size 0.01, reference price 190"."""
    labels = {"name": "name", **{key: label.lower() for _, key, label in NUMBERS}}
    return ", ".join(f"{labels[key]} {value}" for key, value in body.items()) or "no change"


def _showing(symbol: str) -> str:
    """The page filtered on `symbol`: the row just changed, not 500 others."""
    return f"/admin/instruments?{urlencode({'q': symbol})}"
