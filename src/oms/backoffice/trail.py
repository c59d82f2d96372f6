"""The admin trail from the back office's side (docs/decisions/016): recording the admin actions it carries
out at the order and account services, and the trail's page and CSV export.

Auth records the user actions (create, disable, enable, new password) itself, in their own transaction; the
entries for actions at the other services are added here right after the service answered. If auth cannot
take the entry then, the action stands (it is done) and the admin is told the trail missed it; the log keeps
the entry's text, so an operator can see what happened."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from oms.backoffice import export
from oms.backoffice.lists import list_cursor
from oms.backoffice.models import Cursor, TrailEntry, TrailPage
from oms.backoffice.services import ServiceError, Services
from oms.backoffice.sessions import Login, SignedInAdmin, require_csrf, signed_in_admin
from oms.backoffice.views import PAGE_SIZE, ServicesDep, done, pager, render

log = logging.getLogger(__name__)

Target = tuple[str, str, str]  # kind (customer, order, user), id, name


async def record(services: Services, login: Login, action: str, target: Target, detail: str) -> bool:
    """Add the admin's action to the trail; False (and a log line) when auth could not take it."""
    if not login.is_admin:
        return True
    kind, identifier, name = target
    entry = {
        "action": action,
        "targetKind": kind,
        "targetId": identifier,
        "targetName": name,
        "detail": detail,
    }
    try:
        await services.add_to_trail(login.token, entry)
    except ServiceError as exc:
        log.error(
            "admin trail entry not recorded (%s): %s by %s: %s", exc.message, action, login.username, detail
        )
        return False
    return True


async def done_and_recorded(
    request: Request, services: Services, login: Login, action: str, target: Target, text: str, url: str
) -> Response:
    """Record an admin's action (customers' own actions are not the trail's), then go to `url` saying what
    was done: with a warning when the trail missed it."""
    if await record(services, login, action, target, text):
        return done(request, url, text)
    return done(request, url, f"{text} The admin trail could not record this: tell an operator.", "warn")


# --- the trail's page and export ----------------------------------------------------------------------------

router = APIRouter(prefix="/admin", dependencies=[Depends(require_csrf), Depends(signed_in_admin)])


@dataclass(frozen=True)
class TrailSearch:
    """The trail's filters as typed, as the trail API takes them, and what is wrong with them."""

    values: dict[str, str]
    params: dict[str, str]
    errors: list[str]


def trail_search(query: Mapping[str, str]) -> TrailSearch:
    values = {k: query.get(k, "").strip()[:200] for k in ("who", "action", "start", "end")}
    errors: list[str] = []
    days: dict[str, date] = {}
    for name, label in (("start", "From"), ("end", "To")):
        if values[name]:
            try:
                days[name] = date.fromisoformat(values[name])
            except ValueError:
                errors.append(f"{label}: not a date (use YYYY-MM-DD)")
    if "start" in days and "end" in days and days["start"] > days["end"]:
        errors.append("From is after To: no entries are shown until the range is put right")
    wanted = {"who": values["who"], "action": values["action"]}
    params = {k: v for k, v in wanted.items() if v}
    params.update({f"{k}Date": d.isoformat() for k, d in days.items()})
    return TrailSearch(values, params, errors)


@router.get("/trail")
async def trail_page(request: Request, login: SignedInAdmin, services: ServicesDep) -> Response:
    """Every admin action, newest first: who did what to whom, when; filtered, paged both ways, exported."""
    search = trail_search(request.query_params)
    page, count = TrailPage([], None), None
    if not search.errors:
        cursor = list_cursor(request)
        page = await services.trail(login.token, search.params, limit=PAGE_SIZE, cursor=cursor)
        count = await services.count(login.token, "auth", "/admin-trail/count", search.params)
    context = {
        "search": search,
        "page": page,
        "pager": pager(request, page.prev_cursor, page.next_cursor, count, PAGE_SIZE, "entries"),
        "csv": None if search.errors else f"/admin/trail.csv?{request.url.query}",
        "actions": ACTIONS,
    }
    return render(request, "admin/trail.html", context)


@router.get("/trail.csv")
async def trail_export(request: Request, login: SignedInAdmin, services: ServicesDep) -> Response:
    """The trail entries the filters match, as CSV (streamed: any number of rows)."""
    search = trail_search(request.query_params)
    if search.errors:
        raise ServiceError(422, "; ".join(search.errors))

    async def fetch(cursor: Cursor) -> tuple[Sequence[TrailEntry], str | None]:
        found = await services.trail(login.token, search.params, limit=export.EXPORT_PAGE, cursor=cursor)
        return found.entries, found.next_cursor

    pages = export.all_pages(fetch)
    return export.csv_response("admin-trail", export.TRAIL_HEADER, pages, export.trail_cells)


ACTIONS = (
    "create user", "disable user", "enable user", "reset password", "deposit", "withdraw",
    "approve deposit", "reject deposit", "approve withdrawal", "reject withdrawal",
    "place order", "cancel order", "match order", "replay dead letter",
    "change instrument", "halt instrument", "reopen instrument",
)  # fmt: skip
