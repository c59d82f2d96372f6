"""Signing in and out, and registering as a customer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, Response

from oms.backoffice.services import ServiceError
from oms.backoffice.sessions import (
    Flash,
    Login,
    clear_session,
    current_login,
    new_session,
    read_session,
    require_csrf,
    write_session,
)
from oms.backoffice.views import ServicesDep, local_path, render, see_other
from oms.kernel.client_address import peer
from oms.kernel.tokens import KeysUnavailable, TokenError, TokenVerifier

router = APIRouter(dependencies=[Depends(require_csrf)])
log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def _home(login: Login) -> str:
    return "/admin" if login.is_admin else "/"


@router.get("/login")
async def login_page(request: Request, next: str = "/", username: str = "") -> Response:
    """The sign-in form (straight on to the user's home when already signed in)."""
    login = await current_login(request)
    if login is not None:
        return see_other(_home(login))
    return render(request, "login.html", {"next": local_path(next), "username": username})


async def _login(request: Request, token: str) -> Login:
    verifier: TokenVerifier = request.app.state.token_verifier
    principal = await verifier.verify(token)
    return Login(token, principal.user_id, principal.username, principal.role, principal.expires_at)


@router.post("/login")
async def login(
    request: Request,
    services: ServicesDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Exchange the username and password for a token, kept in the encrypted session cookie."""
    try:
        login = await _login(request, await services.login(username, password, peer(request)))
    except ServiceError as exc:
        message = "Invalid username or password." if exc.status in (401, 422) else exc.message
        context = {"next": local_path(next), "username": username, "error": message}
        return render(request, "login.html", context, status=exc.status if exc.status < 500 else 503)
    except (TokenError, KeysUnavailable):
        context = {"next": local_path(next), "username": username, "error": "Cannot sign in right now."}
        return render(request, "login.html", context, status=503)
    target = local_path(next)
    response = see_other(_home(login) if target == "/" else target)
    write_session(request, response, new_session(login))
    return response


@router.post("/logout")
async def logout(request: Request, services: ServicesDep) -> Response:
    """End the session at auth (its token is refused everywhere from then on), forget the cookie, and go
    back to the sign-in form."""
    session = read_session(request)
    notice = "signed-out"
    if session is not None and session.signed_in is not None:
        try:
            await services.logout(session.signed_in.token)
        except ServiceError as exc:
            if exc.status != 401:  # 401: revoked or expired already
                log.warning("sign-out not recorded by auth: %s", exc.message)
                notice = "signed-out-here"
    response = see_other(f"/login?notice={notice}")
    clear_session(request, response)
    return response


@router.get("/register")
async def register_page(request: Request) -> Response:
    """The form to open a customer account."""
    return render(request, "register.html", {"username": ""})


@router.post("/register")
async def register(
    request: Request,
    services: ServicesDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    """Open a customer account, then sign in with it."""
    if password != confirm:
        context = {"username": username, "error": "The two passwords differ."}
        return render(request, "register.html", context, status=422)
    try:
        await services.register(username, password, "customer", address=peer(request))
    except ServiceError as exc:
        return render(request, "register.html", {"username": username, "error": exc.message}, exc.status)
    try:  # signed in at once: nobody should type what they just chose again
        login = await _login(request, await services.login(username, password, peer(request)))
    except (ServiceError, TokenError, KeysUnavailable) as exc:
        log.warning("a new customer could not be signed in at once: %s", exc)
        return see_other("/login?" + urlencode({"notice": "registered", "username": username}))
    response = see_other("/money")
    welcome = (
        f"Welcome, {login.username}: your account is open. Ask for a deposit of lira here, then buy and sell."
    )
    write_session(request, response, new_session(login, Flash("ok", welcome)))
    return response


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> FileResponse:
    """Browsers ask for it whatever the page says; the pages name the SVG one."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")
