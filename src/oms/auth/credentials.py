"""Ending sessions and changing credentials: sign-out, password changes, disabling users, and the list of
revoked tokens every service follows (docs/decisions/012)."""

from __future__ import annotations

import hmac
import uuid
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from oms.auth import domain, store, throttle, trail
from oms.auth.api import ClientAddress, PasswordsDep, PoliciesDep, check_new_password, hash_new
from oms.auth.trail import Entry
from oms.kernel.deps import Pool
from oms.kernel.errors import ApiError, error_responses
from oms.kernel.revocation import PAGE, SERVICE_KEY_HEADER, Fetch, Revocation, Revocations, sync
from oms.kernel.tokens import AdminUser, CurrentUser, Principal

router = APIRouter()


class PasswordChange(BaseModel):
    currentPassword: str
    newPassword: str


class NewPassword(BaseModel):
    newPassword: str


def database_feed(pool: asyncpg.Pool) -> Fetch:
    """Auth's own way to follow the revocations: straight from its database."""

    async def fetch(after: int) -> tuple[list[Revocation], int]:
        async with pool.acquire() as conn:
            return await store.revocations_page(conn, after, PAGE)

    return fetch


async def _refuse_at_once(request: Request) -> None:
    """This replica refuses what was just revoked without waiting for its next read of the list."""
    revocations: Revocations = request.app.state.token_verifier.revocations
    await sync(revocations, request.app.state.revocations_fetch)


@router.post("/logout", status_code=204, tags=["sessions"])
async def logout(caller: CurrentUser, pool: Pool, request: Request) -> Response:
    """End this token's session: every service refuses it from now on (within seconds)."""
    expires_at = datetime.fromtimestamp(caller.expires_at, UTC)
    async with pool.acquire() as conn, conn.transaction():
        await store.revoke_token(conn, uuid.UUID(caller.user_id), caller.token_id, expires_at)
    await _refuse_at_once(request)
    return Response(status_code=204)


async def _change_password(
    pool: asyncpg.Pool, user_id: uuid.UUID, password_hash: str, by: tuple[Principal, Entry] | None = None
) -> None:
    """New password hash; with `by`, the admin's action goes into the trail in the same transaction."""
    async with pool.acquire() as conn, conn.transaction():
        cutoff = domain.revocation_cutoff(await store.now(conn))
        await store.change_password(conn, user_id, password_hash, cutoff, domain.LONGEST_TOKEN_LIFETIME)
        if by is not None:
            await trail.append(conn, *by)


@router.post("/users/me/password", status_code=204, tags=["sessions"], responses=error_responses(429))
async def change_own_password(
    body: PasswordChange,
    caller: CurrentUser,
    pool: Pool,
    passwords: PasswordsDep,
    policies: PoliciesDep,
    address: ClientAddress,
    request: Request,
) -> Response:
    """Change your password; every token issued before (this one too) is refused from now on."""
    check_new_password(body.newPassword)
    async with pool.acquire() as conn:
        await throttle.admit_login(conn, policies, caller.username, address)  # guesses of the current one
        user = await store.user_with_id(conn, uuid.UUID(caller.user_id))
    if user is None or not await passwords.verify(user.password_hash, body.currentPassword):
        raise ApiError(403, "the current password is not right")
    async with pool.acquire() as conn:
        await throttle.login_proven(conn, policies, caller.username, address)
    await _change_password(pool, user.id, await hash_new(passwords, body.newPassword))
    await _refuse_at_once(request)
    return Response(status_code=204)


async def _existing(pool: asyncpg.Pool, user_id: uuid.UUID) -> domain.User:
    async with pool.acquire() as conn:
        user = await store.user_with_id(conn, user_id)
    if user is None:
        raise ApiError(404, "user not found")
    return user


@router.post("/users/{user_id}/password", status_code=204, tags=["users"], responses=error_responses(404))
async def set_password(
    user_id: uuid.UUID,
    body: NewPassword,
    admin: AdminUser,
    pool: Pool,
    passwords: PasswordsDep,
    request: Request,
) -> Response:
    """Give a user a new password (admins); their tokens issued before are refused from now on."""
    check_new_password(body.newPassword)
    user = await _existing(pool, user_id)
    detail = f"New password for {user.username}; their earlier sessions are ended."
    entry = trail.about_user(user, "reset password", detail)
    await _change_password(pool, user.id, await hash_new(passwords, body.newPassword), (admin, entry))
    await _refuse_at_once(request)
    return Response(status_code=204)


@router.post("/users/{user_id}/disable", status_code=204, tags=["users"], responses=error_responses(404, 409))
async def disable_user(user_id: uuid.UUID, admin: AdminUser, pool: Pool, request: Request) -> Response:
    """Stop a user from signing in (admins); their tokens are refused from now on."""
    user = await _existing(pool, user_id)
    problem = domain.may_disable(admin.user_id, user)
    if problem:
        raise ApiError(409, problem)
    detail = f"Disabled {user.username}: they cannot sign in, and their sessions are ended."
    async with pool.acquire() as conn, conn.transaction():
        await store.set_disabled(conn, user_id, True)
        cutoff = domain.revocation_cutoff(await store.now(conn))
        await store.revoke_user(conn, user_id, cutoff, domain.LONGEST_TOKEN_LIFETIME)
        await trail.append(conn, admin, trail.about_user(user, "disable user", detail))
    await _refuse_at_once(request)
    return Response(status_code=204)


@router.post("/users/{user_id}/enable", status_code=204, tags=["users"], responses=error_responses(404))
async def enable_user(user_id: uuid.UUID, admin: AdminUser, pool: Pool) -> Response:
    """Let a disabled user sign in again (admins); tokens revoked by the disable stay refused."""
    user = await _existing(pool, user_id)
    detail = f"Enabled {user.username}: they can sign in again."
    async with pool.acquire() as conn, conn.transaction():
        await store.set_disabled(conn, user_id, False)
        await trail.append(conn, admin, trail.about_user(user, "enable user", detail))
    return Response(status_code=204)


@router.get("/revocations", include_in_schema=False)
async def revocations(
    request: Request,
    pool: Pool,
    key: Annotated[str, Header(alias=SERVICE_KEY_HEADER)] = "",
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> JSONResponse:
    """The revoked tokens after `after` (services only: they send the shared service key)."""
    expected: bytes = request.app.state.service_key
    if not hmac.compare_digest(key.encode(), expected):
        raise ApiError(401, "services only")
    async with pool.acquire() as conn:
        page, cursor = await store.revocations_page(conn, after, PAGE)
    return JSONResponse({"revocations": [r.as_json() for r in page], "cursor": cursor})
