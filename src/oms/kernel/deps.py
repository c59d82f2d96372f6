"""FastAPI dependencies shared by the services' routes."""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Header, Request
from pydantic import BeforeValidator

from oms.kernel.errors import ApiError
from oms.kernel.idempotency import MAX_KEY_LENGTH
from oms.kernel.settings import Settings
from oms.kernel.tokens import Principal
from oms.kernel.unit_of_work import UnitOfWorkFactory

# Async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a hand-off per request.


async def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


async def units_of_work(request: Request) -> UnitOfWorkFactory[Any]:
    """The service's units of work (`app.state.unit_of_work`); a service annotates it with its repository."""
    factory: UnitOfWorkFactory[Any] = request.app.state.unit_of_work
    return factory


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Pool = Annotated[asyncpg.Pool, Depends(_pool)]
AppSettings = Annotated[Settings, Depends(_settings)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[\x21-\x7e]+$",  # visible ASCII
        description="Makes retries safe: 1-200 visible ASCII characters",
    ),
]

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_date_text(value: object) -> object:
    # pydantic alone also reads 0, 1700000000 or "2024-01-01T00:00" as dates.
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a date as YYYY-MM-DD")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date_text)]


def own_customer(principal: Principal, customer_id: uuid.UUID | None) -> uuid.UUID | None:
    """The customer a request may act on: customers only themselves (403 for another), admins anyone
    (None: every customer)."""
    if principal.is_admin:
        return customer_id
    if customer_id is not None and str(customer_id) != principal.user_id:
        raise ApiError(403, "customers may only act on their own account")
    return uuid.UUID(principal.user_id)
