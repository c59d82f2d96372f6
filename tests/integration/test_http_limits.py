"""What every service's HTTP server refuses, served by real uvicorn as `oms serve` configures it: bodies over
64 KiB (413, before they are read), and clients that do not finish their headers in time (disconnected)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import APIRouter, FastAPI, Request

from oms.kernel.http import MAX_BODY_BYTES, create_service_app
from oms.kernel.serving import HeaderTimeoutProtocol, server_config
from oms.kernel.settings import Settings
from tests.integration.served import served

router = APIRouter()


@router.post("/echo")
async def echo(request: Request) -> dict[str, int]:
    return {"read": len(await request.body())}


@asynccontextmanager
async def _nothing(_: FastAPI) -> AsyncIterator[None]:
    yield


def app() -> FastAPI:
    return create_service_app(
        title="limits", description="", lifespan=_nothing, routers=[router], health_checks=lambda _: {}
    )


async def test_a_body_over_64_kib_is_refused_with_413_and_a_json_error() -> None:
    async with served(app(), Settings()) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        assert (await client.post("/echo", content=b"x" * MAX_BODY_BYTES)).json() == {"read": MAX_BODY_BYTES}
        refused = await client.post("/echo", content=b"x" * 10 * 1024 * 1024)
        assert refused.status_code == 413
        assert refused.json() == {"error": "request body too large", "detail": {"maxBytes": MAX_BODY_BYTES}}
        assert (await client.get("/health")).status_code == 200  # the connection goes on


async def test_a_chunked_body_is_refused_once_it_passes_64_kib() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(200):
            yield b"x" * 1024

    async with served(app(), Settings()) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        refused = await client.post("/echo", content=chunks())
        assert (refused.status_code, refused.json()["error"]) == (413, "request body too large")


async def _closed_after(host: str, port: int, sent: bytes, within: float) -> float | None:
    """Seconds until the server closed a connection on which only `sent` was sent (None: still open)."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    writer.write(sent)
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(), within)
    except TimeoutError:
        return None
    finally:
        writer.close()
    assert data == b"", data
    return time.monotonic() - started


async def test_a_client_that_does_not_finish_its_headers_in_time_is_disconnected() -> None:
    settings = Settings(http_header_timeout_seconds=1)
    async with served(app(), settings) as url:
        host, port = url.removeprefix("http://").split(":")
        half_sent = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        silent, partial = await asyncio.gather(
            _closed_after(host, int(port), b"", 10), _closed_after(host, int(port), half_sent, 10)
        )
        assert silent is not None and 0.9 < silent < 5
        assert partial is not None and 0.9 < partial < 5
        # Headers in time and a body later: answered (the timeout is for the headers only).
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(half_sent + b"\r\n")
        await asyncio.sleep(1.5)
        writer.write(b"hello")
        answer = await asyncio.wait_for(reader.read(200), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")


async def test_the_next_request_on_a_kept_alive_connection_has_the_same_deadline() -> None:
    settings = Settings(http_header_timeout_seconds=1)
    async with served(app(), settings) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        writer.write(b"GET /health HTTP/1.1\r\nHo")
        while await asyncio.wait_for(reader.read(4096), 10):
            pass  # the rest of the first answer, then the end of the connection
        writer.close()
        assert time.monotonic() - started < 5


def test_every_service_waits_10_s_for_headers_and_believes_no_forwarded_address_by_default(
    tmp_path: Path,
) -> None:
    config = server_config(app(), Settings(data_dir=tmp_path), 8000)
    assert issubclass(config.http, HeaderTimeoutProtocol)  # type: ignore[arg-type]
    assert config.http.header_timeout == 10.0  # type: ignore[union-attr]
    assert config.proxy_headers is False
    trusted = server_config(app(), Settings(trusted_proxies="10.0.0.0/8, 192.0.2.1"), 8000)
    assert (trusted.proxy_headers, trusted.forwarded_allow_ips) == (True, "10.0.0.0/8,192.0.2.1")
