"""The account service (port 667): composition root."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from oms.account import api, requests_api
from oms.account.handlers import handle_batch
from oms.account.store import Accounts
from oms.kernel.service import create_event_service
from oms.kernel.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    return create_event_service(
        service="account",
        description=(
            "Balances, reservations, the ledger, deposits and withdrawals. The only writer of balances."
        ),
        settings=settings,
        routers=[api.router, requests_api.router],
        repository=Accounts,
        make_handler=lambda unit_of_work, _: partial(handle_batch, unit_of_work),
    )
