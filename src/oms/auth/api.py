"""The auth service's HTTP API: register, login, users, public keys."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from oms.auth import domain, store, throttle, trail
from oms.auth.keys import SigningKey
from oms.auth.passwords import Passwords, PasswordsBusy
from oms.kernel.client_address import client_address
from oms.kernel.deps import Pool
from oms.kernel.errors import ApiError, error_responses
from oms.kernel.settings import Settings
from oms.kernel.tokens import AdminUser, MaybeUser, Principal, Role

router = APIRouter()
INVALID_LOGIN = "invalid username or password"


class RegisterRequest(BaseModel):
    username: str = Field(examples=["alice"])
    password: str = Field(examples=["correct horse battery"])
    role: Role = Role.CUSTOMER


class Created(BaseModel):
    message: str
    id: str


class LoginRequest(BaseModel):
    username: str
    password: str


class TokenResponse(BaseModel):
    token: str
    token_type: str = "bearer"
    expires_in: int


class UserView(BaseModel):
    id: str
    username: str
    role: Role
    createdAt: datetime
    disabled: bool


class UsersResponse(BaseModel):
    users: list[UserView]


async def _passwords(request: Request) -> Passwords:
    passwords: Passwords = request.app.state.passwords
    return passwords


async def _policies(request: Request) -> throttle.Policies:
    policies: throttle.Policies = request.app.state.throttle
    return policies


async def _address(request: Request) -> str:
    return client_address(request, request.app.state.client_address_key, time.time())


PasswordsDep = Annotated[Passwords, Depends(_passwords)]
PoliciesDep = Annotated[throttle.Policies, Depends(_policies)]
ClientAddress = Annotated[str, Depends(_address)]


async def hash_new(passwords: Passwords, password: str) -> str:
    """The hash of a new password, or 503 while too many wait to be hashed."""
    try:
        return await passwords.hash(password)
    except PasswordsBusy:
        raise ApiError(
            503, "too many new passwords at once; try again", headers={"Retry-After": "2"}
        ) from None


def check_new_password(password: str) -> None:
    """422 unless `password` may be a password."""
    problem = domain.password_problem(password)
    if problem:
        raise ApiError(422, problem)


async def create_user(
    pool: asyncpg.Pool, passwords: Passwords, body: RegisterRequest, by: Principal | None = None
) -> domain.User:
    """Validate and store a new user (shared by the API, the bootstrap admin and `oms admin create`); one
    created by an admin (`by`) goes into the admin trail in the same transaction."""
    problem = domain.username_problem(body.username)
    if problem:
        raise ApiError(422, problem)
    check_new_password(body.password)
    password_hash = await hash_new(passwords, body.password)
    try:
        async with pool.acquire() as conn, conn.transaction():
            user = await store.add_user(conn, body.username, password_hash, body.role)
            if by is not None:
                await trail.append(
                    conn,
                    by,
                    trail.about_user(user, "create user", f"Created {user.role.value} {user.username}."),
                )
            return user
    except store.UsernameTaken:
        raise ApiError(409, "username already taken") from None


@router.post(
    "/register", status_code=201, response_model=Created, tags=["users"], responses=error_responses(409, 429)
)
async def register(
    body: RegisterRequest,
    pool: Pool,
    passwords: PasswordsDep,
    policies: PoliciesDep,
    caller: MaybeUser,
    address: ClientAddress,
) -> Created:
    """Create a customer (anyone; a few per address) or an admin (admins only)."""
    if body.role is Role.ADMIN and caller is None:
        raise ApiError(
            401, "creating an admin needs an admin's bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    if body.role is Role.ADMIN and caller is not None and not caller.is_admin:
        raise ApiError(403, "only an admin can create an admin")
    if caller is None or not caller.is_admin:
        problem = domain.username_problem(body.username) or domain.password_problem(body.password)
        if problem:  # refused before it counts
            raise ApiError(422, problem)
        async with pool.acquire() as conn:
            await throttle.admit_registration(conn, policies, address)
    by_admin = caller if caller is not None and caller.is_admin else None
    user = await create_user(pool, passwords, body, by_admin)
    return Created(message="user created", id=str(user.id))


@router.post("/login", response_model=TokenResponse, tags=["users"], responses=error_responses(429))
async def login(
    body: LoginRequest,
    request: Request,
    pool: Pool,
    passwords: PasswordsDep,
    policies: PoliciesDep,
    address: ClientAddress,
) -> TokenResponse:
    """Exchange a username and password for a bearer token."""
    async with pool.acquire() as conn:
        await throttle.admit_login(conn, policies, body.username, address)
        if domain.username_problem(body.username) or len(body.password) > domain.MAX_PASSWORD_LENGTH:
            raise ApiError(401, INVALID_LOGIN)  # no user can have that name or password
        user = await store.user_named(conn, body.username)
    if not await passwords.verify(user.password_hash if user else None, body.password) or user is None:
        raise ApiError(401, INVALID_LOGIN)
    async with pool.acquire() as conn:
        await throttle.login_proven(conn, policies, body.username, address)
    if user.disabled:
        raise ApiError(403, "this account is disabled")
    return await _issue(request.app.state.settings, request.app.state.signing_key, user)


async def _issue(settings: Settings, signing_key: SigningKey, user: domain.User) -> TokenResponse:
    now = datetime.now(UTC)
    issued = domain.issue_time(now, user)
    if issued > now:
        await asyncio.sleep((issued - now).total_seconds())
    lifetime = timedelta(seconds=settings.token_lifetime_seconds)
    claims = domain.token_claims(
        user, now=issued, lifetime=lifetime, issuer=settings.token_issuer, audience=settings.token_audience
    )
    return TokenResponse(token=signing_key.sign(claims), expires_in=int(lifetime.total_seconds()))


@router.get("/users", response_model=UsersResponse, tags=["users"])
async def list_users(_: AdminUser, pool: Pool) -> UsersResponse:
    """Every user (admins only); never their password hashes."""
    async with pool.acquire() as conn:
        users = await store.all_users(conn)
    return UsersResponse(
        users=[
            UserView(
                id=str(u.id), username=u.username, role=u.role, createdAt=u.created_at, disabled=u.disabled
            )
            for u in users
        ]
    )


@router.get("/.well-known/jwks.json", tags=["keys"])
async def jwks(request: Request) -> dict[str, Any]:
    """The public keys that verify this service's tokens."""
    signing_key: SigningKey = request.app.state.signing_key
    return signing_key.jwks
