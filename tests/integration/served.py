"""An app served by real uvicorn, configured as `oms serve` configures it, inside the test's event loop; and
HTTP clients that connect from a chosen loopback address (127.0.0.2, 127.0.0.3, …)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn

from oms.kernel.serving import server_config
from oms.kernel.settings import Settings
from oms.runtime.ports import free_port


@asynccontextmanager
async def served(app: Any, settings: Settings, port: int | None = None) -> AsyncIterator[str]:
    """`app` listening on `port` (default: a free one) of 127.0.0.1 for the block; its base URL."""
    port = port or free_port()
    server = uvicorn.Server(server_config(app, settings, port))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def client_from(base_url: str, address: str) -> httpx.AsyncClient:
    """A client of `base_url` whose connections come from `address`."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30)
