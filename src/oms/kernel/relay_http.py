"""The relay's one HTTP port: `/metrics` (Prometheus), `/livez` and `/readyz` (for orchestrators and load
balancers), served on the relay's own event loop, so that an answer to `/livez` means the loop that relays
still runs.

Ready means "this relay does the relaying now": it streams from its replication slot and is connected to the
broker. A standby relay (another one holds the slot) is live but not ready; so is a relay whose PostgreSQL or
NATS is away, until it streams again.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from oms.kernel.broker import Broker

HEAD_TIMEOUT: Final = 5.0  # seconds a client may take to send its request line and headers
JSON: Final = "application/json"
REASONS: Final = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class RelayHealth:
    """What the relay's `/readyz` reports, written by the relay as its sessions start and end."""

    def __init__(self) -> None:
        self.slot = "unavailable: starting"
        self.broker: Broker | None = None

    def streaming(self) -> None:
        self.slot = "ok"

    def not_streaming(self, why: str) -> None:
        self.slot = f"unavailable: {why}"

    def checks(self) -> dict[str, str]:
        connected = self.broker is not None and self.broker.connected
        return {"slot": self.slot, "broker": "ok" if connected else "unavailable: not connected"}


def answer(health: RelayHealth, method: str, path: str) -> tuple[int, str, bytes]:
    """(status, content type, body) for a request."""
    path = path.split("?", 1)[0]
    if path not in ("/metrics", "/livez", "/readyz"):
        return 404, JSON, json.dumps({"error": "not found: /metrics, /livez or /readyz"}).encode()
    if method not in ("GET", "HEAD"):
        return 405, JSON, json.dumps({"error": "only GET and HEAD"}).encode()
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST, generate_latest()
    if path == "/livez":
        return 200, JSON, json.dumps({"status": "ok"}).encode()
    checks = health.checks()
    ready = all(outcome == "ok" for outcome in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    return (200 if ready else 503), JSON, json.dumps(body).encode()


async def serve_probes(health: RelayHealth, host: str, port: int) -> asyncio.Server:
    """Listen on `host:port`: one request per connection (`Connection: close`), as probes and scrapers
    send them."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            method, path, *_ = [*head.split(b"\r\n", 1)[0].decode("latin-1").split(" "), "", ""]
            status, content_type, body = answer(health, method, path)
            writer.write(
                f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that sent no whole request gets no answer
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(respond, host, port)
