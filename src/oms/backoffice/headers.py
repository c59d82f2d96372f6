"""The headers every back-office response carries: what the browser may load and run (no inline script or
style, nothing from elsewhere, never in a frame), no content sniffing, no referrer to other sites."""

from __future__ import annotations

from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from oms.kernel.http import HttpMiddleware

CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)
HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
}
HTTPS_ONLY: Final = {"Strict-Transport-Security": "max-age=31536000"}


class SecurityHeaders(HttpMiddleware):
    """Adds `HEADERS` to every HTTP response (and HSTS when served over HTTPS)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        extra = {**HEADERS, **(HTTPS_ONLY if scope.get("scheme") == "https" else {})}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
