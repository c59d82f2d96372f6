from datetime import UTC, datetime, timedelta

import pytest

from oms.auth import domain

POLICY = domain.ThrottlePolicy(
    max_failures=5, window=timedelta(minutes=15), max_lockout=timedelta(minutes=15)
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("name", ["abc", "alice", "A.b-c_9", "x" * 64])
def test_username_valid_has_no_problem(name: str) -> None:
    assert domain.username_problem(name) is None


@pytest.mark.parametrize("name", ["ab", "x" * 65, "al ice", "alice!", "ålice", "", "a/b"])
def test_username_invalid_is_refused(name: str) -> None:
    assert domain.username_problem(name) is not None


def test_password_shorter_than_8_is_refused() -> None:
    assert domain.password_problem("1234567") is not None
    assert domain.password_problem("12345678") is None


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


def test_take_back_attempt_never_goes_negative() -> None:
    assert domain.take_back_attempt(domain.LoginAttempts()).failures == 0
    assert domain.take_back_attempt(_attempts(3)).failures == 2
