"""Auth rules: who may be a user, what a token says, when tokens stop being valid, and how failed logins
and registrations are slowed down."""

from __future__ import annotations

import math
import re
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from oms.kernel.tokens import Role

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{1,62}[A-Za-z0-9]")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # argon2 would hash megabytes happily; a login form never needs them
LONGEST_TOKEN_LIFETIME = timedelta(days=1)  # the most OMS_TOKEN_LIFETIME_SECONDS allows


def username_problem(username: str) -> str | None:
    """Why `username` cannot be used, or None."""
    if not USERNAME.fullmatch(username):
        return (
            "username must be 3-64 characters of letters, digits, '_', '.' or '-', "
            "starting and ending with a letter or digit"
        )
    return None


def password_problem(password: str) -> str | None:
    """Why `password` cannot be used, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"password must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"password must be at most {MAX_PASSWORD_LENGTH} characters"
    if all(c.isspace() or unicodedata.category(c).startswith("C") for c in password):
        return "password must not be only spaces or control characters"
    return None


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    username: str
    role: Role
    password_hash: str
    created_at: datetime
    disabled: bool = False
    tokens_valid_after: datetime | None = None  # tokens issued earlier are revoked


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


def revocation_cutoff(now: datetime) -> datetime:
    """From when tokens are valid again after a password change or a disable at `now`: the next whole
    second, since a token's `iat` is whole seconds (a token of this second may predate the change)."""
    return now.replace(microsecond=0) + timedelta(seconds=1)


def issue_time(now: datetime, user: User) -> datetime:
    """When a token for `user` may be issued: not before their last revocation's cutoff (a login in the same
    second as a password change waits for the next second, or its token would be refused)."""
    if user.tokens_valid_after is not None and user.tokens_valid_after > now:
        return user.tokens_valid_after
    return now


def login_keys(username: str, address: str) -> tuple[str, str | None]:
    """The throttle keys a login from `address` counts against: the address (every name tried from it) and
    this username from this address (None for a name no user can have). No key is the username alone, so
    guesses from elsewhere never lock the owner out."""
    user = None if username_problem(username) else f"user:{username.lower()}@{address}"
    return f"address:{address}", user


def registration_key(address: str) -> str:
    """The throttle key of self-registrations from `address`."""
    return f"register:{address}"


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int
    window: timedelta
    max_lockout: timedelta
    first_lockout: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class LoginAttempts:
    """Unproven attempts for one throttle key. Attempts are counted before the password is checked, so
    parallel guesses cannot slip past the limit; a success takes its user's attempts back."""

    failures: int = 0
    last_attempt: datetime | None = None
    locked_until: datetime | None = None

    def current(self, now: datetime, policy: ThrottlePolicy) -> int:
        """Failures still remembered at `now` (the count is forgotten a window after the last attempt)."""
        if self.last_attempt is None or now - self.last_attempt > policy.window:
            return 0
        return self.failures


def retry_after(attempts: LoginAttempts, now: datetime) -> int | None:
    """Seconds until another attempt is allowed, or None if one is allowed now."""
    if attempts.locked_until is None or attempts.locked_until <= now:
        return None
    return max(1, math.ceil((attempts.locked_until - now).total_seconds()))


def count_attempt(attempts: LoginAttempts, now: datetime, policy: ThrottlePolicy) -> LoginAttempts:
    """Count one attempt; from the `max_failures`-th on, each one locks the key for twice as long."""
    failures = attempts.current(now, policy) + 1
    locked_until = attempts.locked_until
    if failures >= policy.max_failures:
        doublings = min(failures - policy.max_failures, 20)
        lockout = min(policy.first_lockout * 2**doublings, policy.max_lockout)
        locked_until = now + lockout
    return LoginAttempts(failures, now, locked_until)


def take_back(attempts: LoginAttempts, count: int, policy: ThrottlePolicy) -> LoginAttempts:
    """Forget `count` attempts a successful login proved honest (a user's typos from an address many people
    share); below the limit again, the key is not locked."""
    failures = max(attempts.failures - count, 0)
    locked_until = attempts.locked_until if failures >= policy.max_failures else None
    return replace(attempts, failures=failures, locked_until=locked_until)


def may_disable(actor_id: str, target: User) -> str | None:
    """Why the admin `actor_id` may not disable `target`, or None."""
    if str(target.id) == actor_id:
        return "admins cannot disable themselves"
    return None
