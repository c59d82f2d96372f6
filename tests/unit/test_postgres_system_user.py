"""As root, PostgreSQL runs as the system user `oms-postgres`, added on first use. Processes that start at
once on a new machine (parallel test workers, replicas) may all find it missing: the losers of the race to add
it must not fail."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from oms.runtime import postgres
from oms.runtime.postgres import SYSTEM_USER, PostgresError, _ensure_system_user


class Passwd:
    """`/etc/passwd` as `pwd.getpwnam` and `useradd` see it, with another process adding the user first."""

    def __init__(self, added_by_another_after: int | None, useradd_succeeds: bool) -> None:
        self.users: set[str] = set()
        self.added_by_another_after = added_by_another_after
        self.useradd_succeeds = useradd_succeeds
        self.useradds = 0

    def getpwnam(self, name: str) -> SimpleNamespace:
        if name not in self.users:
            raise KeyError(name)
        return SimpleNamespace(pw_name=name)

    def run(self, argv: list[str], check: bool = False, **_: object) -> subprocess.CompletedProcess[str]:
        done = self._useradd(argv)
        if check:
            done.check_returncode()
        return done

    def _useradd(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        assert argv[0] == "useradd" and argv[-1] == SYSTEM_USER
        self.useradds += 1
        if self.added_by_another_after is not None and self.useradds >= self.added_by_another_after:
            self.users.add(SYSTEM_USER)
            return subprocess.CompletedProcess(argv, 9, "", f"useradd: user '{SYSTEM_USER}' already exists")
        if self.useradd_succeeds:
            self.users.add(SYSTEM_USER)
            return subprocess.CompletedProcess(argv, 0, "", "")
        return subprocess.CompletedProcess(argv, 10, "", "useradd: cannot lock /etc/passwd; try again later.")


@pytest.fixture
def passwd(monkeypatch: pytest.MonkeyPatch) -> Passwd:
    table = Passwd(added_by_another_after=None, useradd_succeeds=True)
    monkeypatch.setattr(postgres.pwd, "getpwnam", table.getpwnam)
    monkeypatch.setattr(postgres.subprocess, "run", table.run)
    monkeypatch.setattr(postgres.time, "sleep", lambda _: None)
    return table


def test_a_missing_user_is_added_once(passwd: Passwd) -> None:
    assert _ensure_system_user() == SYSTEM_USER
    assert _ensure_system_user() == SYSTEM_USER
    assert passwd.useradds == 1


def test_losing_the_race_to_another_process_is_not_a_failure(passwd: Passwd) -> None:
    passwd.useradd_succeeds, passwd.added_by_another_after = False, 1  # "already exists"
    assert _ensure_system_user() == SYSTEM_USER


def test_passwd_locked_by_the_winner_is_waited_for(passwd: Passwd) -> None:
    passwd.useradd_succeeds, passwd.added_by_another_after = False, 4  # locked thrice, then there
    assert _ensure_system_user() == SYSTEM_USER
    assert passwd.useradds == 4


def test_a_user_that_cannot_be_added_stops_the_start_with_the_reason(passwd: Passwd) -> None:
    passwd.useradd_succeeds = False
    with pytest.raises(PostgresError, match="cannot lock /etc/passwd"):
        _ensure_system_user(attempts=5)
    assert passwd.useradds == 5
