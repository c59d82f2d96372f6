"""Back-office sessions: one encrypted cookie (HttpOnly, SameSite=Strict) that holds the signed-in user's
token, and the session's CSRF token that every form must post back.

The cookie is encrypted and authenticated (Fernet), so the token never reaches page JavaScript nor anyone
who reads the cookie, and any replica with the same key can serve the session. A visitor who is not signed
in gets a session too (CSRF token only), so the login and register forms are protected as well.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from cryptography.fernet import Fernet, InvalidToken
from fastapi import Depends, Request, Response

from oms.kernel.settings import Settings
from oms.kernel.tokens import Role

COOKIE = "oms_session"
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
class Session:
    csrf: str
    login: Login | None = None

    @property
    def signed_in(self) -> Login | None:
        """The login while its token is still valid, else None."""
        if self.login is None or self.login.expires_at <= time.time():
            return None
        return self.login


def new_session(login: Login | None = None) -> Session:
    """A fresh session with a new CSRF token (also at every login, so a planted token is useless)."""
    return Session(csrf=secrets.token_urlsafe(32), login=login)


class SessionCodec:
    """Sessions to and from the cookie's encrypted text."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encode(self, session: Session) -> str:
        return self._fernet.encrypt(json.dumps(asdict(session)).encode()).decode()

    def decode(self, text: str) -> Session | None:
        try:
            data: dict[str, Any] = json.loads(self._fernet.decrypt(text.encode(), ttl=MAX_COOKIE_AGE))
            login = data.get("login")
            return Session(
                csrf=str(data["csrf"]),
                login=Login(**{**login, "role": Role(login["role"])}) if login else None,
            )
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None


def session_key(settings: Settings) -> bytes:
    """The configured key, else the one kept in the data folder's secrets (created on first use)."""
    if settings.backoffice_session_key is not None:
        return settings.backoffice_session_key.get_secret_value().encode()
    path = settings.secrets_dir / KEY_FILE
    if not path.exists():
        _create_key_file(path)
    return path.read_bytes().strip()


def _create_key_file(path: Path) -> None:
    """Write a new key without ever exposing a half-written file: replicas starting together agree."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(Fernet.generate_key())
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another replica won; use its key
    finally:
        temporary.unlink()


def read_session(request: Request) -> Session | None:
    """The session of this request, if its cookie is present and genuine."""
    if not hasattr(request.state, "session"):
        codec: SessionCodec = request.app.state.sessions
        cookie = request.cookies.get(COOKIE)
        request.state.session = codec.decode(cookie) if cookie else None
    found: Session | None = request.state.session
    return found


def write_session(request: Request, response: Response, session: Session) -> None:
    """Set the session cookie on `response` (until the token expires; a browser session if signed out)."""
    codec: SessionCodec = request.app.state.sessions
    login = session.login
    response.set_cookie(
        COOKIE,
        codec.encode(session),
        max_age=max(1, int(login.expires_at - time.time())) if login else None,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    request.state.session = session


def clear_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


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


def signed_in(request: Request) -> Login:
    """The signed-in user, or LoginRequired."""
    session = read_session(request)
    login = session.signed_in if session else None
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
