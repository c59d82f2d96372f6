"""Where a request came from. The client address is the TCP peer (or, from a proxy in OMS_TRUSTED_PROXIES,
what it forwarded: uvicorn resolves that). The back office calls auth on behalf of browsers, so it vouches for
the browser's address with an HMAC under a key only it and auth hold: auth believes that header from the back
office and from no one else, whatever address a request comes from."""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from starlette.requests import Request

HEADER: Final = "X-OMS-Client-Address"
MAX_AGE: Final = 60  # seconds a vouched address may be replayed (clocks of one deployment agree this well)


def _mac(key: bytes, address: str, stamp: str) -> str:
    return hmac.new(key, f"{address};{stamp}".encode(), hashlib.sha256).hexdigest()


def vouch(key: bytes, address: str, now: float) -> str:
    """The header value that vouches for `address` at unix time `now`."""
    stamp = str(int(now))
    return f"{address};{stamp};{_mac(key, address, stamp)}"


def vouched(key: bytes, value: str, now: float) -> str | None:
    """The address `value` vouches for if it is signed with `key` and recent, else None."""
    parts = value.split(";")
    if len(parts) != 3 or not parts[1].isdigit() or abs(now - int(parts[1])) > MAX_AGE:
        return None
    address, stamp, mac = parts
    return address if hmac.compare_digest(mac, _mac(key, address, stamp)) else None


def peer(request: Request) -> str:
    """The address of the client that sent `request` (the TCP peer, or what a trusted proxy forwarded)."""
    return request.client.host if request.client else "unknown"


def client_address(request: Request, key: bytes, now: float) -> str:
    """The address the back office vouches for with `key`, else the peer."""
    value = request.headers.get(HEADER)
    return (vouched(key, value, now) if value else None) or peer(request)
