"""Auth rules: who may be a user, what a token says, and how failed logins are slowed down."""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from oms.kernel.tokens import Role

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # argon2 would hash megabytes happily; a login form never needs them


def username_problem(username: str) -> str | None:
    """Why `username` cannot be used, or None."""
    if not USERNAME.fullmatch(username):
        return "username must be 3-64 characters of letters, digits, '_', '.' or '-'"
    return None


def password_problem(password: str) -> str | None:
    """Why `password` cannot be used, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"password must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"password must be at most {MAX_PASSWORD_LENGTH} characters"
    return None


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    username: str
    role: Role
    password_hash: str
    created_at: datetime


def token_claims(
    user: User, *, now: datetime, lifetime: timedelta, issuer: str, audience: str
) -> dict[str, object]:
    """The claims of a token for `user` issued at `now`."""
    return {
        "sub": str(user.id),
        "username": user.username,
        "role": user.role.value,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "iss": issuer,
        "aud": audience,
        "jti": str(uuid.uuid4()),
    }


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int
    window: timedelta
    max_lockout: timedelta
    first_lockout: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class LoginAttempts:
    """Unproven login attempts for one key (a username or an address). Attempts are counted before the
    password is checked, so parallel guesses cannot slip past the limit; a success takes its count back."""

    failures: int = 0
    last_attempt: datetime | None = None
    locked_until: datetime | None = None


def retry_after(attempts: LoginAttempts, now: datetime) -> int | None:
    """Seconds until another attempt is allowed, or None if one is allowed now."""
    if attempts.locked_until is None or attempts.locked_until <= now:
        return None
    return max(1, math.ceil((attempts.locked_until - now).total_seconds()))


def count_attempt(attempts: LoginAttempts, now: datetime, policy: ThrottlePolicy) -> LoginAttempts:
    """Count one attempt; from the `max_failures`-th on, each one locks the key for twice as long."""
    stale = attempts.last_attempt is None or now - attempts.last_attempt > policy.window
    failures = (0 if stale else attempts.failures) + 1
    locked_until = attempts.locked_until
    if failures >= policy.max_failures:
        doublings = min(failures - policy.max_failures, 20)
        lockout = min(policy.first_lockout * 2**doublings, policy.max_lockout)
        locked_until = now + lockout
    return LoginAttempts(failures, now, locked_until)


def take_back_attempt(attempts: LoginAttempts) -> LoginAttempts:
    """A successful attempt does not count against an address shared by many honest users."""
    return replace(attempts, failures=max(attempts.failures - 1, 0))
