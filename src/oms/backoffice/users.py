"""The admins' users pages: search and list every user (paged both ways), create one, and on a user's page
disable, enable or give a new password (each reviewed first). Auth records these in the admin trail itself."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from oms.backoffice.confirm import Review, review_unless_confirmed
from oms.backoffice.forms import UserForm
from oms.backoffice.models import UserRecord
from oms.backoffice.money import ConfirmToken
from oms.backoffice.services import ServiceError, Services
from oms.backoffice.sessions import Login, SignedInAdmin, require_csrf, signed_in_admin
from oms.backoffice.views import ServicesDep, done, numbered_pager, render

router = APIRouter(prefix="/admin", dependencies=[Depends(require_csrf), Depends(signed_in_admin)])
USERS_PER_PAGE = 50
ROLES = ("customer", "admin")
STATES = ("active", "disabled")


@dataclass(frozen=True)
class UserSearch:
    """The users page's search: part of a name, a role, active or disabled; and the page number."""

    text: str = ""
    role: str = ""
    state: str = ""
    page: int = 1

    def matches(self, user: UserRecord) -> bool:
        return (
            self.text.lower() in user.username.lower()
            and self.role in ("", user.role)
            and self.state in ("", "disabled" if user.disabled else "active")
        )

    @classmethod
    def of(cls, q: str, role: str, state: str, page: str) -> UserSearch:
        number = int(page) if page.isdigit() and 0 < len(page) < 7 else 1
        return cls(q.strip()[:64], role if role in ROLES else "", state if state in STATES else "", number)


async def _users_page(
    request: Request, login: Login, services: Services, form: UserForm, status: int = 200
) -> Response:
    params = request.query_params
    search = UserSearch.of(*(params.get(k, "") for k in ("q", "role", "state", "page")))
    everyone = sorted(await services.users(login.token), key=lambda u: (u.role, u.username.lower()))
    found = [u for u in everyone if search.matches(u)]
    pages = max(1, math.ceil(len(found) / USERS_PER_PAGE))
    number = min(search.page, pages)
    shown = found[(number - 1) * USERS_PER_PAGE : number * USERS_PER_PAGE]
    context = {
        "users": shown,
        "search": search,
        "found": len(found),
        "everyone": len(everyone),
        "pager": numbered_pager(request, number, pages, len(found), "users"),
        "form": form,
    }
    return render(request, "admin/users.html", context, status)


@router.get("/users")
async def users_page(request: Request, login: SignedInAdmin, services: ServicesDep) -> Response:
    """Every user (searched by name, role and state; paged), and the form to create one."""
    return await _users_page(request, login, services, UserForm())


@router.post("/users")
async def create_user(
    request: Request,
    login: SignedInAdmin,
    services: ServicesDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "customer",
) -> Response:
    """Create a customer or an admin."""
    form = UserForm(username=username.strip(), role=role)
    if not form.check(password):
        return await _users_page(request, login, services, form, 422)
    try:
        user_id = await services.register(form.username, password, form.role, login.token)
    except ServiceError as exc:
        if exc.status >= 500:
            raise
        form.problem = exc.message
        return await _users_page(request, login, services, form, exc.status)
    services.forget_usernames()
    return done(request, f"/admin/users/{user_id}", f"User {form.username} ({form.role}) created.")


async def _user(services: Services, login: Login, user_id: uuid.UUID) -> UserRecord:
    user = next((u for u in await services.users(login.token) if u.id == str(user_id)), None)
    if user is None:
        raise ServiceError(404, "no such user")
    return user


async def _user_page(
    request: Request, login: Login, services: Services, user: UserRecord, error: str = "", status: int = 200
) -> Response:
    context = {"user": user, "password_error": error}
    return render(request, "admin/user.html", context, status)


@router.get("/users/{user_id}")
async def user_page(
    request: Request, user_id: uuid.UUID, login: SignedInAdmin, services: ServicesDep
) -> Response:
    """One user: their state, and the forms to give them a new password, disable or enable them."""
    return await _user_page(request, login, services, await _user(services, login, user_id))


@router.post("/users/{user_id}/{change}")
async def change_user(
    request: Request,
    user_id: uuid.UUID,
    change: str,
    login: SignedInAdmin,
    services: ServicesDep,
    password: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
    confirm_token: ConfirmToken = "",
) -> Response:
    """Disable, enable or give a new password to a user, once reviewed and confirmed."""
    user = await _user(services, login, user_id)
    here = f"/admin/users/{user.id}"
    if change not in ("disable", "enable", "password"):
        raise ServiceError(404, "There is no such page.")
    if change == "password" and password != confirm:
        return await _user_page(request, login, services, user, "The two passwords differ.", 422)
    # A new password is typed twice, which is its confirmation: it is never echoed into a review page.
    review = _review(request.url.path, user, change)
    if change != "password":
        page = review_unless_confirmed(request, review, confirm_token)
        if page is not None:
            return page
    try:
        if change == "password":
            await services.set_password(login.token, user.id, password)
        else:
            await services.set_disabled(login.token, user.id, change == "disable")
    except ServiceError as exc:
        if exc.status >= 500:
            raise
        if change == "password" and exc.status == 422:
            return await _user_page(request, login, services, user, exc.message, 422)
        return done(request, here, f"Not done: {exc.message}.", "warn")
    return done(request, here, DONE[change].format(name=user.username))


DONE = {
    "disable": "{name} is disabled: they cannot sign in, and their sessions are ended.",
    "enable": "{name} is enabled: they can sign in again.",
    "password": "{name} has a new password; their earlier sessions are ended.",
}


def _review(path: str, user: UserRecord, change: str) -> Review:
    verb = "disable" if change == "disable" else "enable"
    return Review(
        title=f"{verb.capitalize()} {user.username}",
        action=path,
        fields={},
        button=f"Confirm: {verb}",
        back=f"/admin/users/{user.id}",
        facts=[
            ("User", user.username),
            ("Role", user.role),
            ("Now", "disabled" if user.disabled else "active"),
        ],
        warning=DONE[change].format(name=user.username) if change == "disable" else None,
        danger=change == "disable",
    )
