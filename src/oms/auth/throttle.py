"""Throttling of logins and self-registrations, counted in the auth database so that every replica counts
the same, with the rules of `auth.domain`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from oms.auth import domain, store
from oms.auth.domain import LoginAttempts, ThrottlePolicy
from oms.kernel.errors import ApiError
from oms.kernel.settings import Settings


@dataclass(frozen=True)
class Policies:
    address: ThrottlePolicy  # every login from one address
    user: ThrottlePolicy  # one username from one address
    registration: ThrottlePolicy  # self-registrations from one address

    @classmethod
    def of(cls, settings: Settings) -> Policies:
        window = timedelta(seconds=settings.login_failure_window_seconds)
        lockout = timedelta(seconds=settings.login_max_lockout_seconds)
        registrations = timedelta(seconds=settings.register_window_seconds)
        return cls(
            ThrottlePolicy(settings.login_address_max_failures, window, lockout),
            ThrottlePolicy(settings.login_user_max_failures, window, lockout),
            ThrottlePolicy(
                settings.register_address_max_attempts, registrations, registrations, timedelta(minutes=1)
            ),
        )


def _too_many(wait: int, what: str) -> ApiError:
    return ApiError(429, f"too many {what}; try again later", headers={"Retry-After": str(wait)})


async def _admit(
    conn: asyncpg.Connection, keys: list[tuple[str, ThrottlePolicy]], now: datetime, what: str
) -> None:
    """Count an attempt against every key, or none if one is locked (429). In a transaction."""
    attempts = [await store.attempts_for_update(conn, key) for key, _ in keys]
    waits = [wait for a in attempts if (wait := domain.retry_after(a, now)) is not None]
    if waits:
        raise _too_many(max(waits), what)
    for (key, policy), counted in zip(keys, attempts, strict=True):
        await store.save_attempts(conn, key, domain.count_attempt(counted, now, policy))


async def admit_login(conn: asyncpg.Connection, policies: Policies, username: str, address: str) -> None:
    """Count this login before its password is checked (parallel guesses cannot slip past the limit)."""
    address_key, user_key = domain.login_keys(username, address)
    keys = [(address_key, policies.address)] + ([(user_key, policies.user)] if user_key else [])
    async with conn.transaction():
        await _admit(conn, keys, await store.now(conn), "failed logins")


async def login_proven(conn: asyncpg.Connection, policies: Policies, username: str, address: str) -> None:
    """The password was right: forget this user's attempts from this address, and take them back from the
    address's count (honest typos on an address many people share)."""
    address_key, user_key = domain.login_keys(username, address)
    assert user_key is not None  # a user has a valid name
    async with conn.transaction():
        now = await store.now(conn)
        from_address = await store.attempts_for_update(conn, address_key)
        mine: LoginAttempts = await store.attempts_for_update(conn, user_key)
        await store.forget_attempts(conn, user_key)
        taken_back = domain.take_back(from_address, mine.current(now, policies.user), policies.address)
        await store.save_attempts(conn, address_key, taken_back)


async def admit_registration(conn: asyncpg.Connection, policies: Policies, address: str) -> None:
    """Count a self-registration from `address` (429 once there were too many)."""
    async with conn.transaction():
        keys = [(domain.registration_key(address), policies.registration)]
        await _admit(conn, keys, await store.now(conn), "registrations from this address")
