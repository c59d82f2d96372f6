"""One JSON error shape for every service: {"error": "...", "detail": ...}, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """Every refusal: what is wrong, and details such as the invalid fields."""

    error: str
    detail: Any = None


_MEANING = {
    400: "The body is not JSON",
    401: "No valid bearer token",
    403: "Not allowed for this user",
    404: "No such resource (or not yours)",
    409: "Conflicts with the current state",
    413: "The request body is over 64 KiB",
    422: "Invalid request",
    429: "Too many attempts; see Retry-After",
    503: "A dependency is unavailable",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error codes, each with the ErrorBody schema."""
    return {code: {"model": ErrorBody, "description": _MEANING[code]} for code in codes}


class ApiError(HTTPException):
    """A refusal with a status code, a message, and optional detail for the client."""

    def __init__(
        self, status_code: int, error: str, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code, detail, headers)
        self.error = error


def _body(error: str, detail: Any = None) -> dict[str, Any]:
    return {"error": error, "detail": detail}


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]}
        for e in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.error, exc.detail), exc.status_code, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(_body(str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_body("invalid request", _validation_detail(exc)), 422)

    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.CannotConnectNowError)
    @app.exception_handler(asyncpg.ConnectionDoesNotExistError)
    @app.exception_handler(asyncpg.OperatorInterventionError)
    @app.exception_handler(ConnectionError)
    # What asyncpg raises when the server died in the middle of a transaction and the connection's protocol
    # state is left behind (MagicStack/asyncpg#784); seen once in 10,000 orders across PostgreSQL crashes.
    @app.exception_handler(asyncpg.InternalClientError)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL restarting (or unreachable): not the client's fault, and worth a retry.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(_body("service temporarily unavailable"), 503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(_body("internal error"), 500)
