"""What every page shares: the templates and their filters, rendering with the session, redirects, notices,
and reading the order filters from a query string."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from oms.backoffice.amounts import HINT, money, of_asset, quantity, readable_reason
from oms.backoffice.models import Count, OrderFilter
from oms.backoffice.services import Services
from oms.backoffice.sessions import Flash, new_session, read_session, write_session
from oms.kernel.money import SYMBOL
from oms.kernel.settings import ExecutionMode

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
PAGE_SIZE = 20
PAGING = ("notice", "cursor", "before", "page")  # where a list is, not what it shows
STATUSES = ("PENDING", "MATCHED", "CANCELED")
SIDES = ("BUY", "SELL")

# Messages after a redirect, by a fixed key: the query string never carries text onto the page. What an action
# did, naming what it affected, goes in the session instead (`done`).
NOTICES = {
    "registered": ("ok", "Your account is ready: sign in."),
    "signed-out": ("ok", "You are signed out."),
    "signed-out-here": ("warn", "You are signed out here, but auth could not be told: sign out again soon."),
    "expired": ("warn", "Your session ended: please sign in again."),
    "audited": ("ok", "Audit finished."),
    "audit-running": ("warn", "An audit is running: its result shows here when it finishes."),
    "audit-unavailable": (
        "bad",
        "The audit cannot run now: the broker, which keeps one audit at a time, does not answer.",
    ),
}


def when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


TEMPLATES.env.filters["money"] = money
TEMPLATES.env.filters["quantity"] = quantity
TEMPLATES.env.filters["of_asset"] = of_asset
TEMPLATES.env.filters["reason"] = readable_reason
TEMPLATES.env.globals["amount_hint"] = HINT
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
    flash = None if is_htmx(request) else session.flash  # shown once, on the next whole page
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in PAGING]
    page = {
        "login": session.signed_in,
        "csrf": session.csrf,
        "manual_mode": request.app.state.settings.execution is ExecutionMode.MANUAL,
        "path": request.url.path,
        "notice": (flash.level, flash.text) if flash else NOTICES.get(request.query_params.get("notice", "")),
        "base_query": urlencode(kept),  # this page's filters, for paging links
        "here": request.url.path + (f"?{urlencode(kept)}" if kept else ""),  # where forms come back to
        **(context or {}),
    }
    if page["login"] and not is_htmx(request):
        page["live"] = live_url(page)
    response = TEMPLATES.TemplateResponse(request, name, page, status_code=status)
    if fresh or flash:
        write_session(request, response, replace(session, flash=None))
    return response


def live_url(page: Mapping[str, Any]) -> str:
    """The page's stream of live updates (live.py): the ticker always; the chart of `live_chart`; the
    PENDING orders among `live_orders`, shown as list rows or (`live_view` "status") an order's status."""
    params = {"here": page["here"]}
    if page.get("live_chart"):
        params["chart"] = page["live_chart"]
    pending = [o.id for o in page.get("live_orders", ()) if o.pending]
    if pending:
        params |= {"orders": ",".join(pending), "view": page.get("live_view", "row")}
    return f"/live?{urlencode(params)}"


@dataclass(frozen=True)
class Pager:
    """Links to the newest, newer and older pages of a list, and where this page is ("Page 2 of 7 · 134")."""

    label: str
    newer: str | None = None
    older: str | None = None
    newest: str | None = None


def page_number(request: Request) -> int:
    """The page's number as the links carried it (a label only: cursors say what the page holds)."""
    text = request.query_params.get("page", "")
    return int(text) if text.isdigit() and 0 < len(text) < 8 else 1


def _href(request: Request, **params: str | int) -> str:
    kept = [(k, v) for k, v in request.query_params.multi_items() if k not in PAGING]
    return "?" + urlencode([*kept, *((k, str(v)) for k, v in params.items())])


def pager(
    request: Request,
    prev_cursor: str | None,
    next_cursor: str | None,
    count: Count | None,
    per_page: int,
    noun: str,
) -> Pager:
    """The pager of a list paged by cursors both ways, with its total (or its bound)."""
    number = page_number(request) if prev_cursor else 1  # no newer page: this is the first
    label = f"Page {number}"
    if count is not None:
        pages = max(1, -(-count.count // per_page))
        total = f"{count.count:,}{' or more' if count.at_least else ''}"
        label += f" of {pages:,}{'+' if count.at_least else ''} · {total} {plural(count.count, noun)}"
    return Pager(
        label,
        newer=_href(request, before=prev_cursor, page=number - 1) if prev_cursor else None,
        older=_href(request, cursor=next_cursor, page=number + 1) if next_cursor else None,
        newest=_href(request) if number > 2 else None,
    )


def plural(count: int, noun: str) -> str:
    """`noun` (given in the plural: "orders", "entries") for `count` of them."""
    if count != 1:
        return noun
    return noun[:-3] + "y" if noun.endswith("ies") else noun[:-1]


def numbered_pager(request: Request, number: int, pages: int, total: int, noun: str) -> Pager:
    """The pager of a list held whole (paged by number)."""
    return Pager(
        f"Page {number} of {pages} · {total:,} {plural(total, noun)}",
        newer=_href(request, page=number - 1) if number > 1 else None,
        older=_href(request, page=number + 1) if number < pages else None,
        newest=_href(request) if number > 2 else None,
    )


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def done(request: Request, url: str, text: str, level: str = "ok") -> RedirectResponse:
    """Go to `url` and show `text` there once: what an action did, naming what it affected."""
    response = see_other(url)
    session = read_session(request) or new_session()
    write_session(request, response, replace(session, flash=Flash(level, text)))
    return response


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
    """Filters from a query string; anything invalid is reported (and the list then shows no rows)."""
    values = {k: params.get(k, "").strip() for k in ("start", "end", "status", "asset", "side", "customer")}
    errors: list[str] = []
    start, end = _day(values["start"], "From", errors), _day(values["end"], "To", errors)
    if start and end and start > end:
        errors.append("From is after To: no orders are shown until the range is put right")
    asset = values["asset"].upper()
    if asset and not SYMBOL.fullmatch(asset):
        errors.append("Asset: a symbol such as AAPL")
    for name, label, allowed in (("status", "Status", STATUSES), ("side", "Side", SIDES)):
        if values[name] and values[name] not in allowed:
            errors.append(f"{label}: one of {', '.join(allowed)}")
    where = OrderFilter(
        customer_id=customer_id,
        start=start,
        end=end,
        status=values["status"] if values["status"] in STATUSES else None,
        asset=asset or None,
        side=values["side"] if values["side"] in SIDES else None,
    )
    return FilterForm({**values, "asset": asset}, where, errors)
