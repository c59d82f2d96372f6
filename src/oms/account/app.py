"""The account service (port 667): composition root."""

from __future__ import annotations

from fastapi import FastAPI

from oms.account.api import router
from oms.account.handlers import AccountHandlers
from oms.kernel.service import create_event_service
from oms.kernel.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    return create_event_service(
        service="account",
        description="Balances, reservations and the ledger. The only writer of balances.",
        settings=settings,
        routers=[router],
        make_handler=lambda pool, _: AccountHandlers(pool).handle_batch,
    )
