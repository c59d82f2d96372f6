"""Password hashing (argon2id) off the event loop, in two lanes so that new passwords cannot take the
capacity logins need: checking a password (login) a few at a time; hashing a new one (registration, change)
one at a time, in a thread of lower CPU priority, with a bounded queue (docs/decisions/012)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.concurrency import run_in_threadpool


class PasswordsBusy(Exception):
    """Too many new passwords are waiting to be hashed: refuse rather than queue without end."""


def _lower_priority() -> None:
    # Per thread on Linux; argon2's own threads, started from this one, inherit it.
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class Passwords:
    """Each hash takes ~64 MiB and tens to hundreds of ms of CPU."""

    # New passwords that may wait: waiting costs a connection, not CPU. A short queue measured worse: the
    # refused clients came straight back, and answering them took the event loop from the logins.
    def __init__(self, checks: int = 4, waiting: int = 64) -> None:
        self._hasher = PasswordHasher()
        self._check_slots = asyncio.Semaphore(checks)
        self._new_lane = ThreadPoolExecutor(1, "new-passwords", initializer=_lower_priority)
        self._max_waiting = waiting
        self._waiting = 0
        # Unknown users cost as much as wrong passwords, so timing does not reveal who exists.
        self._decoy = self._hasher.hash("decoy password never used")

    async def hash(self, password: str) -> str:
        """The hash of a new password (PasswordsBusy when too many wait already)."""
        if self._waiting >= self._max_waiting:
            raise PasswordsBusy
        self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._new_lane, self._hasher.hash, password)
        finally:
            self._waiting -= 1

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches `password_hash` (None: an unknown user, checked against a decoy)."""
        async with self._check_slots:
            try:
                return await run_in_threadpool(self._hasher.verify, password_hash or self._decoy, password)
            except (VerificationError, InvalidHashError):
                return False
