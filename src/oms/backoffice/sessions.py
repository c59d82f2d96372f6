"""Back-office sessions: one encrypted cookie (HttpOnly, SameSite=Strict) that holds the signed-in user's
token, and the session's CSRF token that every form must post back.

The cookie is encrypted and authenticated (Fernet), so the token never reaches page JavaScript nor anyone
who reads the cookie, and any replica with the same key can serve the session. A visitor who is not signed
in gets a session too (CSRF token only), so the login and register forms are protected as well. Over HTTPS
the cookie is `__Host-` and Secure. Signing out revokes the token at auth, and every request checks it
against the revoked tokens every replica follows: an old cookie no longer signs anyone in.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any

from cryptography.fernet import Fernet, InvalidToken
from fastapi import Depends, Request, Response

from oms.backoffice.services import ServiceError
from oms.kernel.secret_file import read_or_create
from oms.kernel.settings import Settings
from oms.kernel.tokens import KeysUnavailable, Role, TokenError, TokenVerifier

COOKIE = "oms_session"
SECURE_COOKIE = "__Host-oms_session"  # over HTTPS: sent only over HTTPS, to this host, for every path
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
KEY_FILE = "backoffice-session.key"
MAX_COOKIE_AGE = 24 * 3600  # no token lives longer (see Settings.token_lifetime_seconds)


class LoginRequired(Exception):
    """The page needs a signed-in user; the app sends the visitor to the login page."""


class CsrfRefused(Exception):
    """A POST without this session's CSRF token: refused with 403."""


class AdminOnly(Exception):
    """A customer asked for an admin page: refused with 403."""


@dataclass(frozen=True)
class Login:
    """Who is signed in, and the token the back office calls the services with on their behalf."""

    token: str
    user_id: str
    username: str
    role: Role
    expires_at: float  # unix time: the token's `exp`

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True)
class Flash:
    """A message for the next page only, written by the server (it names what an action affected)."""

    level: str  # ok | warn | bad
    text: str


@dataclass(frozen=True)
class Session:
    csrf: str
    login: Login | None = None
    flash: Flash | None = None

    @property
    def signed_in(self) -> Login | None:
        """The login while its token is still valid, else None."""
        if self.login is None or self.login.expires_at <= time.time():
            return None
        return self.login


def new_session(login: Login | None = None, flash: Flash | None = None) -> Session:
    """A fresh session with a new CSRF token (also at every login, so a planted token is useless)."""
    return Session(csrf=secrets.token_urlsafe(32), login=login, flash=flash)


class SessionCodec:
    """Sessions to and from the cookie's encrypted text."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encode(self, session: Session) -> str:
        return self._fernet.encrypt(json.dumps(asdict(session)).encode()).decode()

    def decode(self, text: str) -> Session | None:
        try:
            data: dict[str, Any] = json.loads(self._fernet.decrypt(text.encode(), ttl=MAX_COOKIE_AGE))
            login, flash = data.get("login"), data.get("flash")
            return Session(
                csrf=str(data["csrf"]),
                login=Login(**{**login, "role": Role(login["role"])}) if login else None,
                flash=Flash(**flash) if flash else None,
            )
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None


def session_key(settings: Settings) -> bytes:
    """The configured key, else the one kept in the data folder's secrets (created on first use)."""
    if settings.backoffice_session_key is not None:
        return settings.backoffice_session_key.get_secret_value().encode()
    return read_or_create(settings.secrets_dir / KEY_FILE, Fernet.generate_key)


def _cookie(request: Request) -> str:
    return SECURE_COOKIE if _https(request) else COOKIE


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def read_session(request: Request) -> Session | None:
    """The session of this request, if its cookie is present and genuine."""
    if not hasattr(request.state, "session"):
        codec: SessionCodec = request.app.state.sessions
        cookie = request.cookies.get(_cookie(request))
        request.state.session = codec.decode(cookie) if cookie else None
    found: Session | None = request.state.session
    return found


def write_session(request: Request, response: Response, session: Session) -> None:
    """Set the session cookie on `response` (until the token expires; a browser session if signed out)."""
    codec: SessionCodec = request.app.state.sessions
    login = session.login
    response.set_cookie(
        _cookie(request),
        codec.encode(session),
        max_age=max(1, int(login.expires_at - time.time())) if login else None,
        path="/",
        secure=_https(request),
        httponly=True,
        samesite="strict",
    )
    request.state.session = session


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        _cookie(request), path="/", secure=_https(request), httponly=True, samesite="strict"
    )


async def require_csrf(request: Request) -> None:
    """Refuse a POST that does not carry this session's CSRF token (form field or htmx header)."""
    if request.method != "POST":
        return
    session = read_session(request)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        with contextlib.suppress(Exception):  # not a form body: no token
            value = (await request.form()).get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
    if session is None or sent is None or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise CsrfRefused


async def current_login(request: Request) -> Login | None:
    """The signed-in user, if their token is still good: not expired, not signed out, not revoked by a
    password change or a disable. A revoked one leaves the session signed out for this request."""
    session = read_session(request)
    login = session.signed_in if session else None
    if session is None or login is None or getattr(request.state, "login_checked", False):
        return login
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        await verifier.verify(login.token)
    except TokenError:
        request.state.session = replace(session, login=None)
        login = None
    except KeysUnavailable:  # which tokens are revoked is not known right now
        raise ServiceError(503, "Sessions cannot be checked right now; try again in a moment.") from None
    request.state.login_checked = True
    return login


async def signed_in(request: Request) -> Login:
    """The signed-in user, or LoginRequired."""
    login = await current_login(request)
    if login is None:
        raise LoginRequired
    return login


def signed_in_admin(login: Annotated[Login, Depends(signed_in)]) -> Login:
    """The signed-in admin, or AdminOnly."""
    if not login.is_admin:
        raise AdminOnly
    return login


SignedIn = Annotated[Login, Depends(signed_in)]
SignedInAdmin = Annotated[Login, Depends(signed_in_admin)]
