"""The relay's bookkeeping of what it may confirm to PostgreSQL, without I/O: acknowledged transactions are
held for a while (docs/decisions/007), then released — their outbox rows deleted — and the WAL position moves
up to them, but never past a transaction whose rows could not be deleted yet."""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Relayed:
    """A committed transaction whose events the broker acknowledged."""

    start_lsn: int  # the WAL position before it: confirming only this much streams it again after a restart
    end_lsn: int
    event_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Held:
    """Transactions acknowledged together, held until `release_at` (time.monotonic)."""

    release_at: float
    transactions: tuple[Relayed, ...]

    @property
    def events(self) -> int:
        return sum(len(t.event_ids) for t in self.transactions)


@dataclass(slots=True)
class _Waiting:
    """A released transaction whose rows are not all deleted yet."""

    start_lsn: int
    event_ids: set[str]


class Confirmations:
    """Which WAL position may be confirmed. Released transactions move it forward, but not past one whose
    outbox rows are still there (not visible yet when the delete ran): were it confirmed, a restarted relay
    would not stream it again, and its rows would stay in the outbox for ever."""

    def __init__(self, confirmed: int = 0) -> None:
        self.confirmed = confirmed
        self.released = confirmed  # the end of the newest released transaction
        self._waiting: list[_Waiting] = []

    def release(self, held: Iterable[Held], undeleted: Set[str]) -> int:
        """`held` is released: its rows are deleted, but for `undeleted` (every event id whose row is still
        there, from these or earlier transactions). Returns the position that may be confirmed now."""
        for batch in held:
            for transaction in batch.transactions:
                left = set(transaction.event_ids) & undeleted
                if left:
                    self._waiting.append(_Waiting(transaction.start_lsn, left))
                self.released = max(self.released, transaction.end_lsn)
        for waiting in self._waiting:
            waiting.event_ids &= undeleted
        self._waiting = [waiting for waiting in self._waiting if waiting.event_ids]
        safe = self._waiting[0].start_lsn if self._waiting else self.released
        self.confirmed = max(self.confirmed, safe)
        return self.confirmed
