"""What a service answers when PostgreSQL goes away under a request: 503 and Retry-After, never a 500."""

from __future__ import annotations

import asyncpg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from oms.kernel.errors import install_error_handlers


@pytest.mark.parametrize(
    "failure",
    [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        ConnectionRefusedError(111, "Connection refused"),
        # The server died mid-transaction and left the connection's protocol in between states.
        asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
    ],
)
def test_a_database_going_away_is_a_503_worth_retrying(failure: Exception) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise failure

    answer = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert (answer.status_code, answer.headers.get("retry-after")) == (503, "1")
    assert answer.json()["error"] == "service temporarily unavailable"


def test_a_bug_is_still_a_500_without_its_details() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/bug")
    async def bug() -> None:
        raise KeyError("secret internals")

    answer = TestClient(app, raise_server_exceptions=False).get("/bug")
    assert answer.status_code == 500
    assert "secret" not in answer.text
