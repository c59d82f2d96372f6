"""Users and login attempts in the auth database."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from oms.auth.domain import LoginAttempts, User
from oms.kernel.tokens import Role


class UsernameTaken(Exception):
    pass


def _user(row: asyncpg.Record) -> User:
    return User(row["id"], row["username"], Role(row["role"]), row["password_hash"], row["created_at"])


async def add_user(conn: asyncpg.Connection, username: str, password_hash: str, role: Role) -> User:
    try:
        row = await conn.fetchrow(
            "INSERT INTO users (id, username, password_hash, role) VALUES ($1, $2, $3, $4) RETURNING *",
            uuid.uuid4(),
            username,
            password_hash,
            role.value,
        )
    except asyncpg.UniqueViolationError:
        raise UsernameTaken(username) from None
    assert row is not None
    return _user(row)


async def user_named(conn: asyncpg.Connection, username: str) -> User | None:
    row = await conn.fetchrow("SELECT * FROM users WHERE lower(username) = lower($1)", username)
    return _user(row) if row else None


async def all_users(conn: asyncpg.Connection) -> list[User]:
    return [_user(r) for r in await conn.fetch("SELECT * FROM users ORDER BY created_at, username")]


async def attempts_for_update(conn: asyncpg.Connection, key: str) -> LoginAttempts:
    """The attempts of `key`, row-locked until the transaction ends (so parallel logins queue here)."""
    await conn.execute("INSERT INTO login_attempts (key) VALUES ($1) ON CONFLICT DO NOTHING", key)
    row = await conn.fetchrow(
        "SELECT failures, last_attempt, locked_until FROM login_attempts WHERE key = $1 FOR UPDATE", key
    )
    assert row is not None
    return LoginAttempts(row["failures"], row["last_attempt"], row["locked_until"])


async def save_attempts(conn: asyncpg.Connection, key: str, attempts: LoginAttempts) -> None:
    await conn.execute(
        "UPDATE login_attempts SET failures = $2, last_attempt = $3, locked_until = $4 WHERE key = $1",
        key,
        attempts.failures,
        attempts.last_attempt,
        attempts.locked_until,
    )


async def forget_attempts(conn: asyncpg.Connection, key: str) -> None:
    await conn.execute("DELETE FROM login_attempts WHERE key = $1", key)


async def now(conn: asyncpg.Connection) -> datetime:
    """The database's clock, so that every replica throttles by the same time."""
    value: datetime = await conn.fetchval("SELECT now()")
    return value
