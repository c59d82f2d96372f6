"""The unit of work: one database transaction around a command or a batch of events, and what its handler
needs inside it — the service's repository, the inbox, idempotency keys, and `emit` for the events to publish.

    async with unit_of_work() as tx:
        todo = await tx.inbox.first_deliveries(envelopes)
        orders = await tx.repository.lock(...)        # reads go to the database at once, under row locks
        tx.repository.save(*changed)                   # writes are staged ...
        tx.emit(*events)                               # ... and so are the events
    # ... and at the end of the block they go, with the outbox rows, as one statement; then it commits.

An exception inside the block rolls everything back: nothing stored, nothing published. Staged writes are not
visible to the unit's own reads (they run last); handlers decide on what they read and stage what follows.
`InMemoryUnitOfWork` is the same contract without a database, for handler tests that need no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import asyncpg

from oms.kernel.events import Envelope, Event
from oms.kernel.idempotency import IdempotencyKeys, KeyReused, PostgresKeys, StoredAnswer
from oms.kernel.inbox import E, Inbox, fresh
from oms.kernel.outbox import outbox_rows
from oms.kernel.sql import Write, write_together

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

Stage = Callable[[Write], None]


class InboxPort(Protocol):
    async def first_deliveries(self, envelopes: Sequence[E]) -> list[E]: ...
    def forget(self, event_ids: Iterable[uuid.UUID]) -> None: ...


class UnitOfWork(Protocol[R_co]):
    """What a handler sees inside the transaction."""

    @property
    def repository(self) -> R_co: ...
    @property
    def inbox(self) -> InboxPort: ...
    @property
    def idempotency(self) -> IdempotencyKeys: ...
    def emit(self, *events: Event) -> None: ...


UnitOfWorkFactory = Callable[[], AbstractAsyncContextManager[UnitOfWork[R]]]


class PostgresUnitOfWork(Generic[R]):
    """A unit of work on one connection in an open transaction."""

    def __init__(
        self, conn: asyncpg.Connection, repository: Callable[[asyncpg.Connection, Stage], R]
    ) -> None:
        self._conn = conn
        self._writes: list[Write] = []
        self._events: list[Envelope[Event]] = []
        self.repository = repository(conn, self._writes.append)
        self.inbox = Inbox(conn, self._writes.append)
        self.idempotency: IdempotencyKeys = PostgresKeys(conn, self._writes.append)

    def emit(self, *events: Event) -> None:
        """Queue `events` for publishing, in this order, if the unit commits."""
        self._events += [Envelope.of(event) for event in events]

    async def flush(self) -> None:
        """Run the staged writes and the outbox rows as one statement."""
        writes = [*self._writes, outbox_rows(self._events)] if self._events else self._writes
        await write_together(self._conn, writes)
        self._writes, self._events = [], []


def postgres_unit_of_work(
    pool: asyncpg.Pool, repository: Callable[[asyncpg.Connection, Stage], R]
) -> UnitOfWorkFactory[R]:
    """Units of work on connections of `pool`, each with `repository(conn, stage)` as its repository."""

    @asynccontextmanager
    async def unit() -> AsyncIterator[UnitOfWork[R]]:
        async with pool.acquire() as conn, conn.transaction():
            tx = PostgresUnitOfWork(conn, repository)
            yield tx
            await tx.flush()

    return unit


# --- Without a database ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A staged in-memory write: `check` raises if it may not happen (like a failed statement), `apply` does
    it. A unit checks all its changes before it applies any, so it commits all or nothing."""

    apply: Callable[[], None]
    check: Callable[[], None] = lambda: None


@dataclass
class InMemoryState:
    """What in-memory units of work share, as committed: inbox, outbox and idempotency keys (the
    repository keeps its own)."""

    inbox: set[uuid.UUID] = field(default_factory=set)
    outbox: list[Envelope[Event]] = field(default_factory=list)
    keys: dict[tuple[str, str], tuple[str, dict[str, Any]]] = field(default_factory=dict)


class _InMemoryInbox:
    def __init__(self, state: InMemoryState, stage: Callable[[Change], None]) -> None:
        self._state = state
        self._stage = stage
        self._recorded: set[uuid.UUID] = set()

    async def first_deliveries(self, envelopes: Sequence[E]) -> list[E]:
        new = {e.id for e in envelopes} - self._state.inbox - self._recorded
        self._recorded |= new
        self._stage(Change(lambda: self._state.inbox.update(new)))
        return fresh(envelopes, new)

    def forget(self, event_ids: Iterable[uuid.UUID]) -> None:
        ids = set(event_ids)
        self._stage(Change(lambda: self._state.inbox.difference_update(ids)))


class _InMemoryKeys(IdempotencyKeys):
    def __init__(self, state: InMemoryState, stage: Callable[[Change], None]) -> None:
        self._state = state
        self._stage = stage

    async def claim(self, principal: str, key: str, fingerprint: str) -> StoredAnswer | None:
        stored = self._state.keys.get((principal, key))
        if stored is None:
            return None
        if stored[0] != fingerprint:
            raise KeyReused(key)
        return StoredAnswer(200, stored[1])

    def remember(self, principal: str, key: str, fingerprint: str, body: dict[str, Any]) -> None:
        self._stage(Change(lambda: self._state.keys.__setitem__((principal, key), (fingerprint, body))))


class InMemoryUnitOfWork(Generic[R]):
    """The unit of work's contract without a database: changes are staged and applied, in order, only if the
    block ends without an error. (No locks: meant for one task at a time.)"""

    def __init__(self, state: InMemoryState, repository: Callable[[Callable[[Change], None]], R]) -> None:
        self._state = state
        self._changes: list[Change] = []
        self.repository = repository(self._changes.append)
        self.inbox = _InMemoryInbox(state, self._changes.append)
        self.idempotency: IdempotencyKeys = _InMemoryKeys(state, self._changes.append)

    def emit(self, *events: Event) -> None:
        envelopes = [Envelope.of(event) for event in events]
        self._changes.append(Change(lambda: self._state.outbox.extend(envelopes)))

    def commit(self) -> None:
        for change in self._changes:
            change.check()
        for change in self._changes:
            change.apply()
        self._changes = []


def in_memory_unit_of_work(
    state: InMemoryState, repository: Callable[[Callable[[Change], None]], R]
) -> UnitOfWorkFactory[R]:
    """Units of work over `state`, each with `repository(stage)` as its repository."""

    @asynccontextmanager
    async def unit() -> AsyncIterator[UnitOfWork[R]]:
        tx = InMemoryUnitOfWork(state, repository)
        yield tx
        tx.commit()

    return unit
