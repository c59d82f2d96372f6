"""Review and confirm: every action that moves money or changes an order or a user is shown first, in words
and figures, and done only when the same values come back with a token that binds them to this session.

The first POST of a form (no token, or a token that does not match the values) answers the review page; it
changes nothing. Its Confirm button posts the same values again with a token: an HMAC, under a key derived
from the session key, of the session's CSRF token, the action's path, the values and an expiry. A token
cannot be moved to another session, another action or other values, and it expires; no script is needed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import Response

from oms.backoffice.sessions import read_session
from oms.backoffice.views import render

FIELD = "confirm_token"
LIFETIME = 600  # seconds a review stays valid


def key_from(session_key: bytes) -> bytes:
    """The confirmation key: derived from the session key, so every replica shares it and no file is added."""
    return hmac.new(session_key, b"oms back office: confirmations", hashlib.sha256).digest()


@dataclass(frozen=True)
class Review:
    """What the admin or customer is about to do, as the review page shows it."""

    title: str  # "Deposit 250,000.50 TRY for ayse"
    action: str  # the path the form posts to (again)
    fields: Mapping[str, str]  # the values posted again with the token (and bound by it)
    button: str  # "Confirm deposit"
    back: str  # where "Go back" leads
    facts: list[tuple[str, str]] = field(default_factory=list)
    warning: str | None = None
    danger: bool = False


def _mac(key: bytes, csrf: str, action: str, fields: Mapping[str, str], expires: int) -> str:
    message = json.dumps([csrf, action, sorted(fields.items()), expires], separators=(",", ":"))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def token_for(key: bytes, csrf: str, review: Review, now: float) -> str:
    expires = int(now) + LIFETIME
    return f"{expires}.{_mac(key, csrf, review.action, review.fields, expires)}"


def is_valid(key: bytes, csrf: str, review: Review, token: str, now: float) -> bool:
    """The token was made for this session, this action and exactly these values, and has not expired."""
    expires_text, _, mac = token.partition(".")
    if not expires_text.isdigit() or int(expires_text) < now:
        return False
    expected = _mac(key, csrf, review.action, review.fields, int(expires_text))
    return hmac.compare_digest(mac.encode(), expected.encode())


def review_unless_confirmed(request: Request, review: Review, token: str) -> Response | None:
    """None when `token` confirms exactly `review`; otherwise the review page to confirm it (nothing done)."""
    session = read_session(request)
    key: bytes = request.app.state.confirm_key
    now = time.time()
    if session is not None and token and is_valid(key, session.csrf, review, token, now):
        return None
    csrf = session.csrf if session is not None else ""
    context = {"review": review, "token": token_for(key, csrf, review, now), "token_field": FIELD}
    return render(request, "confirm.html", context)
