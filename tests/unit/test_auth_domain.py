import uuid
from datetime import UTC, datetime, timedelta

import pytest

from oms.auth import domain
from oms.kernel.tokens import Role

POLICY = domain.ThrottlePolicy(
    max_failures=5, window=timedelta(minutes=15), max_lockout=timedelta(minutes=15)
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("name", ["abc", "alice", "A.b-c_9", "x" * 64, "a.b", "0-0"])
def test_username_valid_has_no_problem(name: str) -> None:
    assert domain.username_problem(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "x" * 65,
        "al ice",
        "alice!",
        "ålice",
        "",
        "a/b",
        "...",
        "---",
        "_alice",
        "alice.",
        "-a-",
        "alice\n",
    ],
)
def test_username_invalid_is_refused(name: str) -> None:
    assert domain.username_problem(name) is not None


def test_password_shorter_than_8_is_refused() -> None:
    assert domain.password_problem("1234567") is not None
    assert domain.password_problem("12345678") is None


def test_password_longer_than_1024_is_refused() -> None:
    assert domain.password_problem("x" * 1024) is None
    assert domain.password_problem("x" * 1025) is not None


@pytest.mark.parametrize("password", [" " * 8, "\0" * 8, "\t\n\r \x0b\x0c  ", "\u200b" * 8, "\u3000" * 8])
def test_password_of_only_spaces_or_control_characters_is_refused(password: str) -> None:
    assert domain.password_problem(password) is not None


@pytest.mark.parametrize("password", ["  pass  word  ", "\0\0\0\0\0\0\0x", "şifre-1234"])
def test_password_with_anything_visible_is_accepted(password: str) -> None:
    assert domain.password_problem(password) is None


def _attempts(n: int, start: datetime = T0, every: timedelta = timedelta(seconds=1)) -> domain.LoginAttempts:
    attempts = domain.LoginAttempts()
    for i in range(n):
        attempts = domain.count_attempt(attempts, start + i * every, POLICY)
    return attempts


def test_throttle_below_limit_never_locks() -> None:
    attempts = _attempts(4)
    assert domain.retry_after(attempts, T0 + timedelta(seconds=4)) is None


def test_throttle_at_limit_locks_for_first_lockout() -> None:
    attempts = _attempts(5)
    assert domain.retry_after(attempts, T0 + timedelta(seconds=4)) == 30
    assert domain.retry_after(attempts, T0 + timedelta(seconds=35)) is None


def test_throttle_each_further_attempt_doubles_the_lockout_up_to_the_maximum() -> None:
    attempts = _attempts(5)
    lockouts = []
    now = T0 + timedelta(seconds=4)
    for _ in range(8):
        now = attempts.locked_until or now
        attempts = domain.count_attempt(attempts, now, POLICY)
        lockouts.append(domain.retry_after(attempts, now))
    assert lockouts == [60, 120, 240, 480, 900, 900, 900, 900]


def test_throttle_old_attempts_outside_window_are_forgotten() -> None:
    attempts = _attempts(4)
    later = T0 + timedelta(minutes=30)
    attempts = domain.count_attempt(attempts, later, POLICY)
    assert attempts.failures == 1
    assert domain.retry_after(attempts, later) is None


def test_take_back_never_goes_negative() -> None:
    assert domain.take_back(domain.LoginAttempts(), 1, POLICY).failures == 0
    assert domain.take_back(_attempts(3), 1, POLICY).failures == 2


def test_take_back_below_the_limit_unlocks_the_key() -> None:
    """An honest success that was the attempt reaching the limit must not leave the address locked."""
    locked = _attempts(5)
    assert domain.retry_after(locked, T0 + timedelta(seconds=5)) is not None
    still_over = domain.take_back(_attempts(7), 1, POLICY)
    assert domain.retry_after(still_over, T0 + timedelta(seconds=7)) is not None
    assert domain.take_back(locked, 1, POLICY).locked_until is None


def test_current_failures_are_forgotten_a_window_after_the_last_attempt() -> None:
    attempts = _attempts(3)
    assert attempts.current(T0 + timedelta(minutes=10), POLICY) == 3
    assert attempts.current(T0 + timedelta(minutes=20), POLICY) == 0


def test_login_keys_are_the_address_and_the_name_from_that_address_never_the_name_alone() -> None:
    assert domain.login_keys("Alice", "192.0.2.1") == ("address:192.0.2.1", "user:alice@192.0.2.1")
    assert domain.login_keys("no such name!", "192.0.2.1") == ("address:192.0.2.1", None)
    assert domain.login_keys("alice", "192.0.2.2")[1] != domain.login_keys("alice", "192.0.2.1")[1]


def _user(**changes: object) -> domain.User:
    user = domain.User(uuid.uuid4(), "alice", Role.CUSTOMER, "hash", T0)
    return domain.User(**{**user.__dict__, **changes})  # type: ignore[arg-type]


def test_revocation_cutoff_is_the_next_whole_second() -> None:
    assert domain.revocation_cutoff(T0 + timedelta(milliseconds=300)) == T0 + timedelta(seconds=1)
    assert domain.revocation_cutoff(T0) == T0 + timedelta(seconds=1)


def test_a_token_is_issued_no_earlier_than_the_users_cutoff() -> None:
    now = T0 + timedelta(milliseconds=400)
    assert domain.issue_time(now, _user()) == now
    cutoff = domain.revocation_cutoff(T0)
    assert domain.issue_time(now, _user(tokens_valid_after=cutoff)) == cutoff
    assert domain.issue_time(cutoff + timedelta(seconds=5), _user(tokens_valid_after=cutoff)) > cutoff


def test_an_admin_cannot_disable_themselves() -> None:
    admin = _user(role=Role.ADMIN)
    assert domain.may_disable(str(admin.id), admin) is not None
    assert domain.may_disable(str(uuid.uuid4()), admin) is None


def test_refusals_tell_the_user_what_is_allowed() -> None:
    assert domain.username_problem("ab") == (
        "username must be 3-64 characters of letters, digits, '_', '.' or '-', "
        "starting and ending with a letter or digit"
    )
    assert domain.password_problem("1234567") == "password must be at least 8 characters"
    assert domain.password_problem("x" * 1025) == "password must be at most 1024 characters"
    assert domain.password_problem(" " * 8) == "password must not be only spaces or control characters"
    admin = _user(role=Role.ADMIN)
    assert domain.may_disable(str(admin.id), admin) == "admins cannot disable themselves"


def test_registrations_are_counted_per_address() -> None:
    assert domain.registration_key("192.0.2.1") != domain.registration_key("192.0.2.2")
    assert domain.registration_key("192.0.2.1") not in domain.login_keys("alice", "192.0.2.1")


def test_the_moment_a_lock_ends_an_attempt_is_allowed_and_until_then_at_least_a_second_is_asked() -> None:
    attempts = _attempts(5)
    assert attempts.locked_until is not None
    assert domain.retry_after(attempts, attempts.locked_until) is None
    assert domain.retry_after(attempts, attempts.locked_until - timedelta(milliseconds=300)) == 1


def test_take_back_to_exactly_the_limit_keeps_the_key_locked() -> None:
    locked = _attempts(6)
    assert domain.take_back(locked, 1, POLICY).locked_until == locked.locked_until
