"""Users, login attempts and revoked tokens in the auth database."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Final

import asyncpg

from oms.auth.domain import LoginAttempts, User
from oms.kernel.revocation import Revocation
from oms.kernel.tokens import Role

# Revocations are listed in the order they commit: a follower that has read up to seq N never misses a
# later-committing N-1 (rare writes, so one at a time costs nothing).
_REVOCATIONS_LOCK: Final = 0x6F6D7352  # "omsR"


class UsernameTaken(Exception):
    pass


def _user(row: asyncpg.Record) -> User:
    return User(
        row["id"],
        row["username"],
        Role(row["role"]),
        row["password_hash"],
        row["created_at"],
        row["disabled"],
        row["tokens_valid_after"],
    )


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


async def user_with_id(conn: asyncpg.Connection, user_id: uuid.UUID) -> User | None:
    row = await conn.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
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


async def change_password(
    conn: asyncpg.Connection, user_id: uuid.UUID, password_hash: str, cutoff: datetime, lasting: timedelta
) -> None:
    """Set a new password hash and revoke the user's tokens issued before `cutoff` (in a transaction)."""
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)
    await revoke_user(conn, user_id, cutoff, lasting)


async def set_disabled(conn: asyncpg.Connection, user_id: uuid.UUID, disabled: bool) -> None:
    await conn.execute("UPDATE users SET disabled = $2 WHERE id = $1", user_id, disabled)


async def revoke_user(
    conn: asyncpg.Connection, user_id: uuid.UUID, cutoff: datetime, lasting: timedelta
) -> None:
    """Refuse every token of the user issued before `cutoff`; listed for `lasting` (the longest a token
    lives). In a transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _REVOCATIONS_LOCK)
    await conn.execute("UPDATE users SET tokens_valid_after = $2 WHERE id = $1", user_id, cutoff)
    await conn.execute(
        "INSERT INTO revocations (user_id, not_before, expires_at) VALUES ($1, $2, $3)",
        user_id,
        cutoff,
        cutoff + lasting,
    )


async def revoke_token(
    conn: asyncpg.Connection, user_id: uuid.UUID, token_id: str, expires_at: datetime
) -> None:
    """Refuse one token (a sign-out). In a transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _REVOCATIONS_LOCK)
    await conn.execute(
        "INSERT INTO revocations (user_id, token_id, expires_at) VALUES ($1, $2, $3)",
        user_id,
        token_id,
        expires_at,
    )


async def revocations_page(conn: asyncpg.Connection, after: int, limit: int) -> tuple[list[Revocation], int]:
    """Up to `limit` revocations after seq `after` that still refuse a living token, in seq order, and the
    cursor to ask from next (past expired entries too). One snapshot for both."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(
            "SELECT seq, user_id, token_id, not_before, expires_at FROM revocations"
            " WHERE seq > $1 AND expires_at > now() ORDER BY seq LIMIT $2",
            after,
            limit,
        )
        newest: int = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM revocations")
    page = [
        Revocation(
            r["seq"],
            str(r["user_id"]),
            r["token_id"],
            int(r["not_before"].timestamp()) if r["not_before"] else None,
            int(r["expires_at"].timestamp()),
        )
        for r in rows
    ]
    # `newest` below `after` means the database was rebuilt: the follower starts again from there.
    return page, page[-1].seq if len(page) == limit else newest


async def forget_expired(conn: asyncpg.Connection, window: timedelta) -> tuple[int, int]:
    """Delete revocations no living token needs and attempts older than `window` that lock nothing."""
    revocations = await conn.execute("DELETE FROM revocations WHERE expires_at < now()")
    attempts = await conn.execute(
        "DELETE FROM login_attempts WHERE last_attempt < now() - $1::interval"
        " AND (locked_until IS NULL OR locked_until < now())",
        window,
    )
    return int(revocations.split()[-1]), int(attempts.split()[-1])


async def now(conn: asyncpg.Connection) -> datetime:
    """The database's clock, so that every replica throttles by the same time."""
    value: datetime = await conn.fetchval("SELECT now()")
    return value
