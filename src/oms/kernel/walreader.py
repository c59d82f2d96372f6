"""Reading the outbox's inserts from the write-ahead log: pgoutput messages decoded into committed
transactions of events, read whenever the replication socket is readable, into a bounded queue."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from psycopg2.extras import ReplicationCursor

from oms.kernel import pgoutput
from oms.kernel.broker import Outgoing
from oms.kernel.topology import OUTBOX_TABLE

# Read ahead of the publisher at most this much; beyond that the WAL waits in PostgreSQL.
QUEUED_TRANSACTIONS: Final = 5000
QUEUED_EVENTS: Final = 10_000
READ_BURST: Final = 512  # replication messages read per wake-up before the other tasks get a turn


@dataclass(slots=True)
class Transaction:
    events: list[Outgoing]
    end_lsn: int
    commit_time: datetime


@dataclass
class OutboxDecoder:
    """Turns the pgoutput stream into committed transactions of outbox events."""

    relations: dict[int, tuple[int, int, int] | None] = field(default_factory=dict)
    events: list[Outgoing] = field(default_factory=list)

    def feed(self, payload: bytes) -> Transaction | None:
        message = pgoutput.decode(payload)
        if isinstance(message, pgoutput.Insert):
            columns = self.relations.get(message.relation_oid)
            if columns is not None:
                self.events.append(_outgoing(message.values, columns))
        elif isinstance(message, pgoutput.Commit):
            done, self.events = self.events, []
            return Transaction(done, message.end_lsn, message.commit_time)
        elif isinstance(message, pgoutput.Begin):
            self.events = []
        elif isinstance(message, pgoutput.Relation):
            self.relations[message.oid] = _outbox_columns(message)
        return None


def _outbox_columns(relation: pgoutput.Relation) -> tuple[int, int, int] | None:
    if relation.name != OUTBOX_TABLE:
        return None
    column = relation.columns.index
    return column("id"), column("subject"), column("payload")


def _outgoing(values: tuple[str | None, ...], columns: tuple[int, int, int]) -> Outgoing:
    event_id, subject, payload = (values[i] for i in columns)
    if event_id is None or subject is None or payload is None:
        raise pgoutput.DecodeError("outbox row without id, subject or payload")
    return Outgoing(subject, payload.encode(), event_id)


class WalReader:
    """Reads the replication stream whenever its socket is readable, draining what has arrived, and queues
    the committed transactions; it stops reading while the queue is full (the WAL then waits in PostgreSQL)
    and resumes once half of it was taken."""

    def __init__(self, cursor: ReplicationCursor) -> None:
        self.cursor = cursor
        self.queue: deque[Transaction] = deque()
        self.queued_events = 0
        self.ready = asyncio.Event()  # set when the queue has something, or when the reader stopped
        self.decoder = OutboxDecoder()
        self.loop = asyncio.get_running_loop()
        self.fd = cursor.connection.fileno()
        self.failed: asyncio.Future[None] = self.loop.create_future()
        self.reading = False
        self.stopped = False
        self._continuing = False

    def take(self, events: int) -> list[Transaction]:
        """Transactions from the head of the queue, up to `events` events (at least one transaction)."""
        taken: list[Transaction] = []
        count = 0
        while self.queue and (not taken or count < events):
            taken.append(self.queue.popleft())
            count += len(taken[-1].events)
        self.queued_events -= count
        self.resume()
        return taken

    def resume(self) -> None:
        if self.reading or self.stopped or self._full(half=True):
            return
        self.reading = True
        self.loop.add_reader(self.fd, self._readable)
        self._continue_soon()  # messages may wait in libpq's buffer while the socket is quiet

    def pause(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def stop(self) -> None:
        self.stopped = True
        self.pause()
        self.ready.set()

    def drain(self) -> None:
        """Read what has arrived (read_message also reports our position every STATUS_INTERVAL)."""
        if not self.reading:
            return
        try:
            self._read_burst()
        except Exception as exc:  # the session ends with it
            self.stop()
            if not self.failed.done():
                self.failed.set_exception(exc)
        if self.queue:
            self.ready.set()

    def _full(self, half: bool = False) -> bool:
        divisor = 2 if half else 1
        return (
            len(self.queue) >= QUEUED_TRANSACTIONS // divisor
            or self.queued_events >= QUEUED_EVENTS // divisor
        )

    def _readable(self) -> None:
        if not self._continuing:  # else the continuation reads it
            self.drain()

    def _continue_soon(self) -> None:
        if not self._continuing:
            self._continuing = True
            self.loop.call_soon(self._continue)

    def _continue(self) -> None:
        self._continuing = False
        self.drain()

    def _read_burst(self) -> None:
        read, feed = self.cursor.read_message, self.decoder.feed
        for _ in range(READ_BURST):
            if self._full():
                self.pause()
                return
            message = read()
            if message is None:
                return
            transaction = feed(message.payload)
            if transaction is not None:
                self.queue.append(transaction)
                self.queued_events += len(transaction.events)
        self._continue_soon()  # more may be buffered: read it after the other tasks had a turn
