"""What every page shares: the templates and their filters, rendering with the session, redirects, notices,
and reading the order filters from a query string."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from oms.backoffice.models import OrderFilter
from oms.backoffice.services import ServiceError, Services
from oms.backoffice.sessions import new_session, read_session, write_session
from oms.kernel.money import SYMBOL
from oms.kernel.settings import ExecutionMode

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
PAGE_SIZE = 20
STATUSES = ("PENDING", "MATCHED", "CANCELED")
SIDES = ("BUY", "SELL")

# Messages after a redirect, by a fixed key: the query string never carries text onto the page.
NOTICES = {
    "registered": ("ok", "Your account is ready: sign in."),
    "signed-out": ("ok", "You are signed out."),
    "signed-out-here": ("warn", "You are signed out here, but auth could not be told: sign out again soon."),
    "expired": ("warn", "Your session ended: please sign in again."),
    "deposited": ("ok", "Deposit recorded."),
    "deposit-requested": ("ok", "Deposit requested: your balance changes once an admin approves it."),
    "withdrawal-paid": ("ok", "Withdrawal paid."),
    "withdrawal-requested": ("ok", "Withdrawal requested: its amount is held until an admin approves it."),
    "approved": ("ok", "Request approved."),
    "rejected": ("ok", "Request rejected."),
    "decided-already": ("warn", "That request was already decided by someone else."),
    "four-eyes": ("warn", "You asked for that withdrawal: another admin must approve it (four eyes)."),
    "user-created": ("ok", "User created."),
    "canceled": ("ok", "Order canceled."),
    "matched": ("ok", "Order matched."),
    "too-late": ("warn", "That order is no longer PENDING: it was matched or canceled meanwhile."),
    "not-reserved": ("warn", "Its funds are not reserved yet: try again in a moment."),
    "replayed": ("ok", "Dead letter sent back to its consumer."),
    "audited": ("ok", "Audit finished."),
    "instrument-saved": ("ok", "Instrument saved: the market publishes it at once."),
    "halted": ("ok", "Instrument halted: no quotes and no new orders until it is reopened."),
    "reopened": ("ok", "Instrument reopened."),
}


def amount(value: Decimal | None) -> str:
    """An exact decimal with thousands separators and no trailing zeros (1,234.5)."""
    if value is None:
        return ""
    return f"{value.normalize():,f}"


def when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


TEMPLATES.env.filters["amount"] = amount
TEMPLATES.env.filters["when"] = when


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render(
    request: Request, name: str, context: Mapping[str, Any] | None = None, status: int = 200
) -> Response:
    """A page with the session's CSRF token; a visitor without a session gets one here."""
    session = read_session(request)
    fresh = session is None
    if session is None:
        session = new_session()
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in ("notice", "cursor")]
    page = {
        "login": session.signed_in,
        "csrf": session.csrf,
        "manual_mode": request.app.state.settings.execution is ExecutionMode.MANUAL,
        "path": request.url.path,
        "notice": NOTICES.get(request.query_params.get("notice", "")),
        "base_query": urlencode(kept),  # this page's filters, for paging links
        "here": request.url.path + (f"?{urlencode(kept)}" if kept else ""),  # where forms come back to
        **(context or {}),
    }
    response = TEMPLATES.TemplateResponse(request, name, page, status_code=status)
    if fresh:
        write_session(request, response, session)
    return response


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def with_notice(url: str, notice: str) -> str:
    """`url` that shows notice `notice` (a key of NOTICES) when rendered."""
    return f"{url}{'&' if '?' in url else '?'}notice={notice}"


def local_path(value: str | None, default: str = "/") -> str:
    """`value` if it is a path on this site (never another site: no open redirect), else `default`."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


@dataclass(frozen=True)
class FilterForm:
    """The order filters as typed (echoed back into the form) and as the API takes them."""

    values: dict[str, str]
    where: OrderFilter
    errors: list[str]


def _day(text: str, label: str, errors: list[str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append(f"{label}: not a date (use YYYY-MM-DD)")
        return None


def order_filters(params: Mapping[str, str], customer_id: str | None = None) -> FilterForm:
    """Filters from a query string; anything invalid is reported and left out, never sent on."""
    values = {k: params.get(k, "").strip() for k in ("start", "end", "status", "asset", "side", "customer")}
    errors: list[str] = []
    start, end = _day(values["start"], "From", errors), _day(values["end"], "To", errors)
    if start and end and start > end:
        errors.append("From is after To")
        start = end = None
    asset = values["asset"].upper()
    if asset and not SYMBOL.fullmatch(asset):
        errors.append("Asset: a symbol such as AAPL")
        asset = ""
    where = OrderFilter(
        customer_id=customer_id,
        start=start,
        end=end,
        status=values["status"] if values["status"] in STATUSES else None,
        asset=asset or None,
        side=values["side"] if values["side"] in SIDES else None,
    )
    return FilterForm({**values, "asset": asset}, where, errors)


async def order_action(
    action: Awaitable[object], target: str, done: str, refused: Callable[[ServiceError], str]
) -> Response:
    """Cancel or match an order, then back to `target` with the notice `done`, or `refused(error)` when the
    order was no longer in a state to allow it (409)."""
    try:
        await action
    except ServiceError as exc:
        if exc.status != 409:
            raise
        return see_other(with_notice(target, refused(exc)))
    return see_other(with_notice(target, done))
