"""The common shape of every service's HTTP app: errors, /livez, /readyz (and /health), /metrics, request
metrics, /docs."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import simplejson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel, WithJsonSchema
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oms.kernel.docs import serve_docs
from oms.kernel.errors import ApiError, error_responses, install_error_handlers

HealthCheck = Callable[[], Awaitable[None]]  # raises when what it checks does not answer
CHECK_TIMEOUT = 2.0  # seconds: a dependency that answers later is as good as down for a probe
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = "127.0.0.0/8,::1"

# Money and sizes leave as exact JSON numbers: pydantic would send strings and floats would round.
ExactNumber = Annotated[Decimal, WithJsonSchema({"type": "number"})]


class ExactJSONResponse(JSONResponse):
    """JSON with `Decimal`s written as exact numbers (e.g. 0.10000000000000000001, not 0.1)."""

    def render(self, content: Any) -> bytes:
        return simplejson.dumps(content, use_decimal=True, separators=(",", ":"), default=_plain).encode()


def _plain(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)  # UUIDs


def exact_json(model: BaseModel, status_code: int = 200) -> ExactJSONResponse:
    """Answer with `model` (declare it as the route's response_model for the docs)."""
    return ExactJSONResponse(model.model_dump(mode="python", by_alias=True), status_code)


REQUESTS = Counter("oms_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "oms_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class HttpMiddleware:
    """An ASGI middleware of HTTP requests (`handle`); lifespan and other scopes pass through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RequestMetrics(HttpMiddleware):
    """Counts and times requests by route template (never by raw path, which would explode labels)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            LATENCY.labels(scope["method"], route).observe(time.perf_counter() - started)
            REQUESTS.labels(scope["method"], route, str(status)).inc()


def client_networks(spec: str) -> tuple[Network, ...] | None:
    """The networks of OMS_METRICS_CLIENTS ("127.0.0.0/8,::1"), None for "*" (anyone); ValueError names a
    bad entry."""
    if spec.strip() == "*":
        return None
    try:
        return tuple(ipaddress.ip_network(part.strip()) for part in spec.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"OMS_METRICS_CLIENTS: {exc}") from None


def _may_read(request: Request, networks: tuple[Network, ...] | None) -> bool:
    if networks is None:
        return True
    try:
        address = ipaddress.ip_address(request.client.host if request.client else "")
    except ValueError:
        return False
    return any(address in network for network in networks)


class Liveness(BaseModel):
    """The process answers."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Whether this process should get traffic: every dependency it needs answers. `checks` names each one,
    "ok" or "unavailable: <why>" (the kind of failure only: never an address or a secret)."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


async def _outcome(check: HealthCheck) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except TimeoutError:
        return f"unavailable: no answer within {CHECK_TIMEOUT:g}s"
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}"
    return "ok"


async def readiness(checks: Mapping[str, HealthCheck]) -> Readiness:
    """Every check, run together, each bounded by CHECK_TIMEOUT."""
    outcomes = await asyncio.gather(*(_outcome(check) for check in checks.values()))
    named = dict(zip(checks, outcomes, strict=True))
    return Readiness(status="ok" if all(o == "ok" for o in outcomes) else "unavailable", checks=named)


# A replica that shares its port (SO_REUSEPORT) listens only once it is ready: the kernel spreads new
# connections over every listening socket, so one still loading (its market data, say) would answer its share
# with 503 while its twin could serve them. Not for ever: a dependency that stays down is for /readyz to say.
READY_FIRST_WITHIN = 30.0


async def _until_ready(checks: Callable[[], Mapping[str, HealthCheck]]) -> None:
    deadline = time.monotonic() + READY_FIRST_WITHIN
    while time.monotonic() < deadline:
        if (await readiness(checks())).status == "ok":
            return
        await asyncio.sleep(0.1)


_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": Readiness, "description": "A dependency does not answer: the checks name it"}
}
MAX_BODY_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """The request body passed the limit while the app was reading it."""


class BodyLimit(HttpMiddleware):
    """Refuses a request body over MAX_BODY_BYTES with 413 before reading it all: at once when its
    Content-Length says so, else as soon as the bytes read pass the limit (whatever the app answered to
    the body cut short is replaced by the 413)."""

    limit = MAX_BODY_BYTES

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            await self._refuse(scope, send)
            return
        received, exceeded, started = 0, False, False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                exceeded = True
                raise BodyTooLarge
            return message

        async def send_unless_exceeded(message: Message) -> None:
            nonlocal started
            if not exceeded:
                started = started or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, limited_receive, send_unless_exceeded)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = {"error": "request body too large", "detail": {"maxBytes": self.limit}}
        await JSONResponse(body, 413)(scope, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def create_service_app(
    *,
    title: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    routers: list[APIRouter],
    health_checks: Callable[[FastAPI], Mapping[str, HealthCheck]],
    metrics_clients: str = LOOPBACK,
    ready_first: bool = False,
) -> FastAPI:
    """A FastAPI app with the project's error shape, `/livez`, `/readyz` (`health_checks`; `/health` is the
    same) and `/metrics` (served only to the addresses in `metrics_clients`: the API port may face the world,
    the counters should not). `ready_first`: its start-up ends only once it is ready (or after
    READY_FIRST_WITHIN), so that a replica sharing its port with others gets no connection before."""
    networks = client_networks(metrics_clients)

    @asynccontextmanager
    async def starting(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app):
            if ready_first:
                await _until_ready(lambda: health_checks(app))
            yield

    app = FastAPI(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=starting,
        docs_url=None,
        redoc_url=None,
    )
    serve_docs(app)
    install_error_handlers(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(RequestMetrics)
    for router in routers:
        # Any route may refuse a caller or a request; 404/409 are declared by the routes that answer them.
        app.include_router(router, responses=error_responses(400, 401, 403, 413, 422, 503))

    @app.get("/livez", tags=["operations"])
    async def livez() -> Liveness:
        """Live: the process's event loop answers. Touches no database or broker (a probe that restarts a
        process on failure must not restart it for a dependency's outage)."""
        return Liveness(status="ok")

    @app.get("/readyz", tags=["operations"], response_model=Readiness, responses=_NOT_READY)
    async def readyz() -> JSONResponse:
        """Ready for traffic: every dependency (database, broker) answers; 503 names those that do not."""
        ready = await readiness(health_checks(app))
        return JSONResponse(ready.model_dump(), 200 if ready.status == "ok" else 503)

    # What /health always answered (live and ready); kept for the tools and scripts that call it.
    app.get("/health", tags=["operations"], response_model=Readiness, responses=_NOT_READY)(readyz)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics of this process (403 unless the caller's address is in OMS_METRICS_CLIENTS)."""
        if not _may_read(request, networks):
            raise ApiError(403, "metrics are served only to the addresses in OMS_METRICS_CLIENTS")
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
