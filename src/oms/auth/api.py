"""The auth service's HTTP API: register, login, users, public keys."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from oms.auth import domain, store
from oms.auth.keys import SigningKey
from oms.kernel.deps import Pool
from oms.kernel.errors import ApiError, error_responses
from oms.kernel.settings import Settings
from oms.kernel.tokens import AdminUser, MaybeUser, Role

router = APIRouter()


class Passwords:
    """argon2id hashing off the event loop, a few at a time (each hash takes ~64 MiB and tens of ms)."""

    def __init__(self, concurrency: int = 4) -> None:
        self._hasher = PasswordHasher()
        self._slots = asyncio.Semaphore(concurrency)
        # Unknown users cost as much as wrong passwords, so timing does not reveal who exists.
        self._decoy = self._hasher.hash("decoy password never used")

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await run_in_threadpool(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        async with self._slots:
            try:
                return await run_in_threadpool(self._hasher.verify, password_hash or self._decoy, password)
            except (VerificationError, InvalidHashError):
                return False


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


class UsersResponse(BaseModel):
    users: list[UserView]


async def create_user(pool: asyncpg.Pool, passwords: Passwords, body: RegisterRequest) -> domain.User:
    """Validate and store a new user (shared by the API, the bootstrap admin and `oms admin create`)."""
    problem = domain.username_problem(body.username) or domain.password_problem(body.password)
    if problem:
        raise ApiError(422, problem)
    password_hash = await passwords.hash(body.password)
    try:
        async with pool.acquire() as conn:
            return await store.add_user(conn, body.username, password_hash, body.role)
    except store.UsernameTaken:
        raise ApiError(409, "username already taken") from None


@router.post(
    "/register", status_code=201, response_model=Created, tags=["users"], responses=error_responses(409)
)
async def register(body: RegisterRequest, request: Request, pool: Pool, caller: MaybeUser) -> Created:
    """Create a customer (anyone) or an admin (admins only)."""
    if body.role is Role.ADMIN and caller is None:
        raise ApiError(
            401, "creating an admin needs an admin's bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    if body.role is Role.ADMIN and caller is not None and not caller.is_admin:
        raise ApiError(403, "only an admin can create an admin")
    user = await create_user(pool, request.app.state.passwords, body)
    return Created(message="user created", id=str(user.id))


async def _count_attempt(conn: asyncpg.Connection, key: str, policy: domain.ThrottlePolicy) -> None:
    now = await store.now(conn)
    attempts = await store.attempts_for_update(conn, key)
    wait = domain.retry_after(attempts, now)
    if wait is not None:
        raise ApiError(429, "too many failed logins; try again later", headers={"Retry-After": str(wait)})
    await store.save_attempts(conn, key, domain.count_attempt(attempts, now, policy))


def _policies(settings: Settings) -> tuple[domain.ThrottlePolicy, domain.ThrottlePolicy]:
    window = timedelta(seconds=settings.login_failure_window_seconds)
    lockout = timedelta(seconds=settings.login_max_lockout_seconds)
    return (
        domain.ThrottlePolicy(settings.login_user_max_failures, window, lockout),
        domain.ThrottlePolicy(settings.login_address_max_failures, window, lockout),
    )


@router.post("/login", response_model=TokenResponse, tags=["users"], responses=error_responses(429))
async def login(body: LoginRequest, request: Request, pool: Pool) -> TokenResponse:
    """Exchange a username and password for a bearer token."""
    settings: Settings = request.app.state.settings
    user_policy, address_policy = _policies(settings)
    user_key = f"user:{body.username.lower()}"
    address_key = f"address:{request.client.host if request.client else 'unknown'}"
    async with pool.acquire() as conn:
        async with conn.transaction():
            await _count_attempt(conn, address_key, address_policy)
        if domain.username_problem(body.username):
            raise ApiError(401, "invalid username or password")  # no such user can exist
        async with conn.transaction():
            await _count_attempt(conn, user_key, user_policy)
        user = await store.user_named(conn, body.username)
        valid = await request.app.state.passwords.verify(user.password_hash if user else None, body.password)
        if not valid or user is None:
            raise ApiError(401, "invalid username or password")
        async with conn.transaction():
            await store.forget_attempts(conn, user_key)
            attempts = await store.attempts_for_update(conn, address_key)
            await store.save_attempts(conn, address_key, domain.take_back_attempt(attempts))
    lifetime = timedelta(seconds=settings.token_lifetime_seconds)
    claims = domain.token_claims(
        user,
        now=datetime.now(UTC),
        lifetime=lifetime,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
    )
    signing_key: SigningKey = request.app.state.signing_key
    return TokenResponse(token=signing_key.sign(claims), expires_in=int(lifetime.total_seconds()))


@router.get("/users", response_model=UsersResponse, tags=["users"])
async def list_users(_: AdminUser, pool: Pool) -> UsersResponse:
    """Every user (admins only); never their password hashes."""
    async with pool.acquire() as conn:
        users = await store.all_users(conn)
    return UsersResponse(
        users=[
            UserView(id=str(u.id), username=u.username, role=u.role, createdAt=u.created_at) for u in users
        ]
    )


@router.get("/.well-known/jwks.json", tags=["keys"])
async def jwks(request: Request) -> dict[str, Any]:
    """The public keys that verify this service's tokens."""
    signing_key: SigningKey = request.app.state.signing_key
    return signing_key.jwks
