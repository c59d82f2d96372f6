"""The outbox relay: reads one service database's write-ahead log through logical replication (pgoutput),
publishes every committed outbox row to the broker in commit order, and confirms its position to PostgreSQL
only once the broker has acknowledged everything before it. After a crash it resumes from the confirmed
position; what was published but not yet confirmed is published again and dropped by the broker as a
duplicate (its message id is the event id).

Relayed rows are deleted after the broker's acknowledgement (docs/decisions/004). When the replication slot
is missing at start (first start, or dropped/invalidated), whatever is left in the table is published first.

Everything runs on one asyncio loop: psycopg2's replication cursor reads without blocking when its socket is
readable, and nats-py is asyncio. A reader task decodes committed transactions into a bounded queue; a
publisher task publishes them in batches, pipelined, and confirms the end of the last batch fully acked.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import asyncpg
import psycopg2
import psycopg2.errors
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from psycopg2.extras import LogicalReplicationConnection, ReplicationCursor

from oms.kernel import pgoutput
from oms.kernel.broker import Broker, JetStreamBroker, Outgoing, PublishAborted
from oms.kernel.consumer import StopSignal
from oms.kernel.outbox import PUBLICATION, PUBLICATION_DDL, TABLE

log = logging.getLogger(__name__)

BATCH_EVENTS: Final = 1000  # events published before waiting for their acknowledgements
QUEUED_TRANSACTIONS: Final = 5000  # read ahead of the publisher; beyond that the WAL waits in PostgreSQL
STATUS_INTERVAL: Final = 1  # seconds between position reports to PostgreSQL
POLL: Final = 0.2  # seconds: how quickly a stop request is noticed
# A commit reaches the WAL stream a moment before other sessions can see it, so a relayed row may not be
# deletable yet; the delete is retried for this long (rows streamed again after a restart may be long gone).
DELETE_GRACE: Final = 5.0
_SERVICE = re.compile(r"[a-z][a-z0-9_]{0,40}")

EVENTS_RELAYED: Final = Counter("oms_relay_events", "Outbox events published and acknowledged", ["service"])
PUBLISH_RETRIES: Final = Counter("oms_relay_publish_retries", "Publishes retried after no ack", ["service"])
LAG_BYTES: Final = Gauge("oms_relay_lag_bytes", "WAL bytes not yet confirmed by the relay", ["service"])
OLDEST_AGE: Final = Gauge("oms_relay_oldest_unrelayed_seconds", "Age of the oldest outbox row", ["service"])
COMMIT_TO_ACK: Final = Histogram(
    "oms_relay_commit_to_ack_seconds",
    "From a transaction's commit to the broker's acknowledgement of its events",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class RelayConfigError(RuntimeError):
    """The database is not ready for the relay; retrying will not help until someone fixes it."""


class SlotBusy(RuntimeError):
    """Another relay streams this slot (a second replica): this one stands by."""


def slot_name(service: str) -> str:
    return f"oms_{service}_outbox"


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
    if relation.name != TABLE:
        return None
    column = relation.columns.index
    return column("id"), column("subject"), column("payload")


def _outgoing(values: tuple[str | None, ...], columns: tuple[int, int, int]) -> Outgoing:
    event_id, subject, payload = (values[i] for i in columns)
    if event_id is None or subject is None or payload is None:
        raise pgoutput.DecodeError("outbox row without id, subject or payload")
    return Outgoing(subject, payload.encode(), event_id)


class Relay:
    """One session of the relay of `service`'s database; `serve` restarts sessions after failures."""

    def __init__(
        self, service: str, database_url: str, broker: Broker, stop: StopSignal, batch: int = BATCH_EVENTS
    ) -> None:
        if not _SERVICE.fullmatch(service):
            raise RelayConfigError(f"invalid service name {service!r}: lower-case letters, digits and _")
        self.service = service
        self.slot = slot_name(service)
        self.database_url = database_url
        self.broker = broker
        self.stop = stop
        self.batch = batch
        self.confirmed_lsn = 0
        self.undeleted: dict[str, float] = {}  # event id → when its row was first found invisible
        # Transactions whose relayed rows could not be deleted yet: (position before it, its end, row ids).
        # The position is confirmed only up to the first of them, so a restart relays them again and the
        # new session deletes their rows instead of leaving them for ever.
        self.waiting: list[tuple[int, int, set[str]]] = []

    async def run(self) -> None:
        pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                created = await prepare_database(conn, self.slot)
            await self.broker.ensure_topology()
            if created:
                await self._publish_leftovers(pool)
            replication = await asyncio.to_thread(self._start_replication)
            try:
                await self._stream(replication.cursor(), pool)
            finally:
                replication.close()
        finally:
            await pool.close()

    def _start_replication(self) -> LogicalReplicationConnection:
        conn = psycopg2.connect(self.database_url, connection_factory=LogicalReplicationConnection)
        try:
            conn.cursor().start_replication(
                slot_name=self.slot,
                decode=False,
                status_interval=STATUS_INTERVAL,
                options={"proto_version": "1", "publication_names": PUBLICATION},
            )
        except psycopg2.errors.ObjectInUse as exc:
            conn.close()
            raise SlotBusy(str(exc).strip()) from None
        except BaseException:
            conn.close()
            raise
        log.info("relay %s: streaming from slot %s", self.service, self.slot)
        return conn

    async def _stream(self, cursor: ReplicationCursor, pool: asyncpg.Pool) -> None:
        queue: asyncio.Queue[Transaction] = asyncio.Queue(QUEUED_TRANSACTIONS)
        tasks = [
            asyncio.create_task(self._read(cursor, queue), name="relay-read"),
            asyncio.create_task(self._publish(cursor, queue, pool), name="relay-publish"),
        ]
        monitor = asyncio.create_task(self._monitor(pool), name="relay-monitor")
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a failure ends the session; the finally clause stops the other task
            await asyncio.gather(*tasks)
        finally:
            for task in [*tasks, monitor]:
                task.cancel()
            await asyncio.gather(*tasks, monitor, return_exceptions=True)
            with suppress(psycopg2.Error):
                _send_feedback(cursor, flush_lsn=self.confirmed_lsn, force=True)

    async def _read(self, cursor: ReplicationCursor, queue: asyncio.Queue[Transaction]) -> None:
        decoder = OutboxDecoder()
        messages = 0
        while not self.stop.is_set():
            message = cursor.read_message()  # also reports our position every STATUS_INTERVAL
            if message is None:
                await _readable(cursor.connection.fileno(), POLL)
                continue
            transaction = decoder.feed(message.payload)
            if transaction is not None:
                await queue.put(transaction)
            messages += 1
            if messages % 256 == 0:
                await asyncio.sleep(0)  # let the publisher handle acknowledgements

    async def _publish(
        self, cursor: ReplicationCursor, queue: asyncio.Queue[Transaction], pool: asyncpg.Pool
    ) -> None:
        previous = self.confirmed_lsn
        while True:
            batch = await self._next_batch(queue)
            if not batch:
                if self.stop.is_set():
                    return
                if self.undeleted:
                    await self._forget(pool, [])
                    self._confirm(cursor, previous)
                continue
            events = [event for transaction in batch for event in transaction.events]
            await self._deliver(events, pool)
            acked_at = datetime.now(UTC)
            for transaction in batch:
                if transaction.events:
                    age = (acked_at - transaction.commit_time).total_seconds()
                    COMMIT_TO_ACK.labels(self.service).observe(max(age, 0.0))
                left = {event.msg_id for event in transaction.events} & self.undeleted.keys()
                if left:
                    self.waiting.append((previous, transaction.end_lsn, left))
                previous = transaction.end_lsn
            self._confirm(cursor, previous)

    def _confirm(self, cursor: ReplicationCursor, newest: int) -> None:
        """Confirm `newest`, or the position before the first transaction whose rows are not deleted yet."""
        self.waiting = [(before, end, ids & self.undeleted.keys()) for before, end, ids in self.waiting]
        self.waiting = [entry for entry in self.waiting if entry[2]]
        safe = self.waiting[0][0] if self.waiting else newest
        self.confirmed_lsn = max(self.confirmed_lsn, safe)
        _send_feedback(cursor, flush_lsn=self.confirmed_lsn)

    async def _next_batch(self, queue: asyncio.Queue[Transaction]) -> list[Transaction]:
        try:
            batch = [await asyncio.wait_for(queue.get(), POLL)]
        except TimeoutError:
            return []
        count = len(batch[0].events)
        while count < self.batch and not queue.empty():
            batch.append(queue.get_nowait())
            count += len(batch[-1].events)
        return batch

    async def _deliver(self, events: list[Outgoing], pool: asyncpg.Pool) -> None:
        """Publish `events`, wait for every ack, then delete their rows (never before the acks)."""
        if not events:
            return
        await self.broker.publish(
            events, give_up=self.stop.is_set, on_retry=PUBLISH_RETRIES.labels(self.service).inc
        )
        EVENTS_RELAYED.labels(self.service).inc(len(events))
        await self._forget(pool, [e.msg_id for e in events])

    async def _forget(self, pool: asyncpg.Pool, event_ids: list[str]) -> None:
        """Delete the rows of relayed events, and retry those that were not visible yet."""
        wanted = [*event_ids, *self.undeleted]
        deleted = await pool.fetch("DELETE FROM outbox WHERE id = ANY($1::uuid[]) RETURNING id::text", wanted)
        gone = {event_id for (event_id,) in deleted}
        now = time.monotonic()
        self.undeleted = {
            event_id: since
            for event_id in wanted
            if event_id not in gone and now - (since := self.undeleted.get(event_id, now)) < DELETE_GRACE
        }

    async def _publish_leftovers(self, pool: asyncpg.Pool) -> None:
        """Publish, in insertion order, the rows committed before the slot existed (or before it was lost);
        rows committed since are also in the stream and will be dropped by the broker as duplicates."""
        last = await pool.fetchval("SELECT max(seq) FROM outbox")
        after, total = 0, 0
        while last is not None:
            rows = await pool.fetch(
                "SELECT seq, id::text, subject, payload::text FROM outbox"
                " WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                after,
                last,
                self.batch,
            )
            if not rows:
                break
            await self._deliver([Outgoing(r["subject"], r["payload"].encode(), r["id"]) for r in rows], pool)
            after, total = rows[-1]["seq"], total + len(rows)
        if total:
            log.warning(
                "relay %s: published %d outbox rows left from before the slot existed", self.service, total
            )

    async def _monitor(self, pool: asyncpg.Pool, every: float = 2.0) -> None:
        while True:
            with suppress(asyncpg.PostgresError, OSError):
                row = await pool.fetchrow(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag,"
                    " (SELECT extract(epoch FROM now() - min(created_at)) FROM outbox)::float8 AS age"
                    " FROM pg_replication_slots WHERE slot_name = $1",
                    self.slot,
                )
                if row is not None:
                    LAG_BYTES.labels(self.service).set(row["lag"] or 0)
                    OLDEST_AGE.labels(self.service).set(row["age"] or 0)
            await asyncio.sleep(every)


def _send_feedback(cursor: ReplicationCursor, flush_lsn: int, force: bool = False) -> None:
    """Report `flush_lsn` as processed: sent with the next status message, or now if `force`."""
    cursor.send_feedback(flush_lsn=flush_lsn, force=force)  # type: ignore[no-untyped-call]


async def _readable(fd: int, max_wait: float) -> None:
    """Wait until `fd` has data or `max_wait` passes (registered only while waiting: a readable socket
    nobody is reading would otherwise wake the loop without pause)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, max_wait)
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(fd)


async def prepare_database(conn: asyncpg.Connection, slot: str) -> bool:
    """Check the server, create the publication and the slot if missing; True if the slot was created."""
    level = await conn.fetchval("SHOW wal_level")
    if level != "logical":
        raise RelayConfigError(
            f"PostgreSQL runs with wal_level={level}, but the relay reads the write-ahead log by logical "
            "replication: set wal_level=logical (postgresql.conf or -c wal_level=logical) and restart it"
        )
    if await conn.fetchval("SELECT to_regclass($1)", TABLE) is None:
        raise RelayConfigError(f"no {TABLE} table in this database: run the service's migrations first")
    await conn.execute(PUBLICATION_DDL)
    row = await conn.fetchrow(
        "SELECT database, wal_status, active FROM pg_replication_slots WHERE slot_name = $1", slot
    )
    if row is not None and row["database"] != await conn.fetchval("SELECT current_database()"):
        raise RelayConfigError(f"replication slot {slot} belongs to database {row['database']}")
    if row is not None and row["wal_status"] == "lost" and not row["active"]:
        log.warning("replication slot %s was invalidated (WAL removed); recreating it", slot)
        await conn.execute("SELECT pg_drop_replication_slot($1)", slot)
        row = None
    if row is not None:
        return False
    try:
        await conn.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
    except asyncpg.DuplicateObjectError:
        return False  # another replica created it a moment ago
    log.info("created replication slot %s", slot)
    return True


async def serve(service: str, database_url: str, nats_url: str, stop: StopSignal) -> None:
    """Relay until `stop` is set, restarting after any failure (with backoff) from the confirmed position."""
    failures = 0
    while not stop.is_set():
        try:
            broker = await JetStreamBroker.connect(nats_url, name=f"oms-relay-{service}")
            try:
                await Relay(service, database_url, broker, stop).run()
            finally:
                await broker.close()
            continue
        except (RelayConfigError, asyncio.CancelledError):
            raise
        except SlotBusy as exc:
            log.info("relay %s: standing by, the slot is in use (%s)", service, exc)
            await _sleep_unless(stop, 5.0)
            continue
        except PublishAborted:
            continue  # only raised once stop is set
        except Exception as exc:
            failures += 1
            delay = min(0.5 * 2 ** (failures - 1), 10.0)
            log.warning("relay %s failed: %s; restarting in %.1fs", service, exc, delay, exc_info=exc)
            await _sleep_unless(stop, delay)


async def _sleep_unless(stop: StopSignal, seconds: float) -> None:
    for _ in range(max(1, round(seconds / POLL))):
        if stop.is_set():
            return
        await asyncio.sleep(POLL)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop` (only possible from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_relay(
    service: str,
    database_url: str,
    nats_url: str,
    stop_event: threading.Event,
    metrics_port: int | None = None,
) -> None:
    """Run the relay of `service` until `stop_event` is set (from the main thread, SIGTERM/SIGINT set it).
    Raises RelayConfigError when the database cannot be relayed (e.g. wal_level is not logical)."""
    if metrics_port is not None:
        start_http_server(metrics_port, addr="127.0.0.1")
    with _stop_on_signals(stop_event):
        asyncio.run(serve(service, database_url, nats_url, stop_event))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oms.kernel.relay", description=__doc__.split("\n")[0])
    parser.add_argument("--service", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--metrics-port", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_relay(args.service, args.database_url, args.nats_url, threading.Event(), args.metrics_port)
    except RelayConfigError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
