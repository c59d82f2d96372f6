"""The admins' System page: health of every component, relay lag, consumer backlog and redeliveries, the
dead letters with a Replay button, and `oms audit` with a Run button (docs/decisions/006)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from oms.backoffice.audits import AuditRun, AuditRunning, SharedAudits
from oms.backoffice.services import OPERATED, ServiceError, Services
from oms.backoffice.sessions import Login, SignedInAdmin, require_csrf, signed_in_admin
from oms.backoffice.trail import done_and_recorded
from oms.backoffice.views import ServicesDep, render, see_other
from oms.kernel.settings import Settings
from oms.runtime.audit import MarketRules, run_audit

log = logging.getLogger(__name__)
PAGE_LETTERS = "/admin/system#dead-letters"
router = APIRouter(prefix="/admin/system", dependencies=[Depends(require_csrf), Depends(signed_in_admin)])
COMPONENTS = ("auth", "order", "account", "market", "nats")
AUDIT_SETTLE_SECONDS = 5.0  # orders still in flight may take this long before they count as violations
AUDIT_TIMEOUT = 120.0


async def _ops(services: Services, login: Login, service: str) -> dict[str, Any]:
    try:
        return await services.ops_status(login.token, service)
    except ServiceError as exc:
        return {"service": service, "error": exc.message}


async def _dead_letters(services: Services, login: Login) -> tuple[list[dict[str, Any]], list[str]]:
    letters, problems = [], []
    for service in OPERATED:
        try:
            letters += [
                {**letter, "service": service} for letter in await services.dead_letters(login.token, service)
            ]
        except ServiceError as exc:
            problems.append(f"{service}: {exc.message}")
    return letters, problems


async def status_context(services: Services, login: Login) -> dict[str, Any]:
    """Health of every component and the operations status of the relayed services, fetched together."""
    health = await asyncio.gather(*(services.health(c) for c in COMPONENTS))
    ops = await asyncio.gather(*(_ops(services, login, s) for s in OPERATED))
    return {"health": health, "ops": ops, "checked_at": datetime.now(UTC)}


@router.get("")
async def system_page(request: Request, login: SignedInAdmin, services: ServicesDep) -> Response:
    """Everything an operator checks daily, in one page."""
    letters, problems = await _dead_letters(services, login)
    context = {
        **await status_context(services, login),
        "letters": letters,
        "letter_problems": problems,
        **await _audit_context(request.app.state.audits),
    }
    return render(request, "admin/system.html", context)


async def _audit_context(audits: SharedAudits) -> dict[str, Any]:
    """The last audit any replica ran and whether one runs now (kept on the broker, shared by replicas)."""
    try:
        return {"audit": await audits.last(), "audit_running": await audits.running(), "audit_problem": None}
    except Exception as exc:
        problem = f"the broker, which keeps it, does not answer ({type(exc).__name__})"
        return {"audit": None, "audit_running": False, "audit_problem": problem}


@router.get("/status")
async def system_status(request: Request, login: SignedInAdmin, services: ServicesDep) -> Response:
    """The health and backlog panel alone (the page refreshes it every few seconds)."""
    return render(request, "admin/_system_status.html", await status_context(services, login))


@router.post("/dead-letters/{service}/{seq}/replay")
async def replay(
    request: Request,
    service: Literal["order", "account"],
    seq: Annotated[int, Path(ge=1)],
    login: SignedInAdmin,
    services: ServicesDep,
) -> Response:
    """Send one dead letter back to its consumer (into the admin trail: it changes what the service did)."""
    await services.replay(login.token, service, seq)
    text = f"Dead letter {seq} sent back to the {service} service's consumer."
    target = ("dead letter", f"{service}/{seq}", f"{service} #{seq}")
    return await done_and_recorded(request, services, login, "replay dead letter", target, text, PAGE_LETTERS)


async def audit_now(settings: Settings) -> AuditRun:
    """Run `oms audit` against both databases (the one place the back office reads them)."""
    started = time.monotonic()
    # The audit's read-only role: the back office is given no other database access (docs/decisions/010).
    order_url, account_url = settings.audit_order_database_url, settings.audit_account_database_url
    if not (order_url and account_url):
        error = "no audit database URLs: set OMS_AUDIT_ORDER_DATABASE_URL and OMS_AUDIT_ACCOUNT_DATABASE_URL"
        return AuditRun(datetime.now(UTC), 0.0, None, error)
    try:
        report = await asyncio.wait_for(
            run_audit(order_url, account_url, AUDIT_SETTLE_SECONDS, MarketRules.from_settings(settings)),
            AUDIT_TIMEOUT,
        )
    except Exception as exc:
        return AuditRun(datetime.now(UTC), time.monotonic() - started, None, f"{type(exc).__name__}: {exc}")
    return AuditRun(datetime.now(UTC), time.monotonic() - started, report, None, len(report.violations))


@router.post("/audit")
async def run_audit_now(request: Request, _: SignedInAdmin) -> Response:
    """Check every invariant across the order and account databases now (one audit at a time across every
    back-office replica)."""
    audits: SharedAudits = request.app.state.audits
    try:
        await audits.run(lambda: audit_now(request.app.state.settings))
    except AuditRunning:
        return see_other("/admin/system?notice=audit-running#audit")
    except Exception as exc:
        log.warning("the audit could not run: its lease on the broker failed (%s)", exc, exc_info=exc)
        return see_other("/admin/system?notice=audit-unavailable#audit")
    return see_other("/admin/system?notice=audited#audit")
