"""Serving a service's app with uvicorn: whose forwarded client addresses are believed, how long a client
may take to send its request headers, and TLS."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from oms.kernel.settings import Settings


class ServingConfigError(ValueError):
    """A setting of the HTTP server is wrong; the message names it."""


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, which waits for request headers for ever, closing a connection whose
    headers are not complete `header_timeout` seconds after it opened or after its next request began: a
    client cannot hold connections open by sending headers a byte at a time (slowloris)."""

    header_timeout = 10.0
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_deadline is None:
            self._await_headers()

    def on_headers_complete(self) -> None:
        self._headers_arrived()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _headers_arrived(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            self._await_headers()  # a pipelined request waits for the answer to the one before
        elif not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class, closing connections whose headers take more than `seconds`."""
    return type("HeaderTimeout", (HeaderTimeoutProtocol,), {"header_timeout": seconds})


def trusted_proxies(spec: str) -> str:
    """OMS_TRUSTED_PROXIES checked (addresses or networks, comma-separated), as uvicorn takes it."""
    entries = [part.strip() for part in spec.split(",") if part.strip()]
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ServingConfigError(f"OMS_TRUSTED_PROXIES: not an address or network: {entry!r}") from None
    return ",".join(entries)


def server_config(app: Any, settings: Settings, port: int) -> uvicorn.Config:
    """How every service is served (ServingConfigError names a wrong setting)."""
    proxies = trusted_proxies(settings.trusted_proxies)
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        raise ServingConfigError("HTTPS needs both OMS_TLS_CERT_FILE and OMS_TLS_KEY_FILE")
    return uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        http=with_header_timeout(settings.http_header_timeout_seconds),
        # The client address is the TCP peer unless the peer is a proxy we were told to trust.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies,
        ssl_certfile=settings.tls_cert_file,
        ssl_keyfile=settings.tls_key_file,
        log_config=None,
        access_log=False,
        # A stream (server-sent events) never ends by itself: at shutdown it is cut after this many seconds
        # rather than holding the process until it is killed; its client reconnects to another replica.
        timeout_graceful_shutdown=5,
    )
