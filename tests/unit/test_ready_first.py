"""A replica sharing its port starts listening only once it is ready (kernel/http.py `ready_first`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI

from oms.kernel import http
from oms.kernel.http import create_service_app


@asynccontextmanager
async def nothing(_: FastAPI) -> AsyncIterator[None]:
    yield


def app_with(ready_first: bool, answers: list[bool]) -> FastAPI:
    """An app whose one dependency answers as `answers` say, in turn (then as the last one)."""

    async def market() -> None:
        ok = answers.pop(0) if len(answers) > 1 else answers[0]
        if not ok:
            raise ConnectionError("not loaded yet")

    return create_service_app(
        title="t",
        description="d",
        lifespan=nothing,
        routers=[],
        health_checks=lambda app: {"market": market},
        ready_first=ready_first,
    )


async def test_a_replica_sharing_its_port_finishes_starting_once_ready() -> None:
    answers = [False, False, False, True]
    app = app_with(True, answers)
    async with app.router.lifespan_context(app):
        assert answers == [True]  # asked until it answered


async def test_a_lone_service_starts_at_once() -> None:
    answers = [False, False, True]
    app = app_with(False, answers)
    async with app.router.lifespan_context(app):
        assert answers == [False, False, True]  # not asked


async def test_a_dependency_that_stays_down_does_not_stop_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "READY_FIRST_WITHIN", 0.3)
    app = app_with(True, [False])
    async with asyncio.timeout(5), app.router.lifespan_context(app):
        pass  # started after READY_FIRST_WITHIN: its /readyz says what is missing
