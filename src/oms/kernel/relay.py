"""The outbox relay: reads one service database's write-ahead log through logical replication (pgoutput),
publishes every committed outbox row to the broker in commit order, and confirms its position to PostgreSQL
only once the broker has acknowledged everything before it. After a crash it resumes from the confirmed
position; what was published but not yet confirmed is published again and dropped by the broker as a
duplicate (its message id is the event id).

Relayed rows are deleted after the broker's acknowledgement (docs/decisions/004). When the replication slot
is missing at start (first start, or dropped/invalidated), whatever is left in the table is published first.

A broker that acknowledges before its disk sync (JetStream with a `sync_interval`) could lose acknowledged
events on a power cut, so the relay holds each acknowledged event for `confirm_delay` seconds (two sync
intervals) before it deletes its row and confirms its position (docs/decisions/007).

Everything runs on one (uv)loop: psycopg2's replication cursor is read without blocking whenever its socket is
readable, and nats-py is asyncio. The reader decodes committed transactions into a bounded queue; the
publisher publishes them in batches, up to IN_FLIGHT at once, and holds each acknowledged batch in order; the
releaser deletes the rows of released events in one statement every FLUSH_INTERVAL and confirms the position
up to them. A batch retried after a broker hiccup may be stored after a later one: the stream keeps commit
order only while the broker answers, and consumers are correct under reordering (SPEC §4) — confirmation
never is out of order.
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
from collections import deque
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import psycopg2
import psycopg2.errors
from prometheus_client import Counter, Gauge, Histogram
from psycopg2.extras import LogicalReplicationConnection, ReplicationCursor

from oms.kernel.broker import Broker, JetStreamBroker, Outgoing, PublishAborted
from oms.kernel.confirmation import Confirmations, Held, Relayed
from oms.kernel.consumer import StopSignal
from oms.kernel.nats_access import NatsAccess, NatsConfigError, access_for
from oms.kernel.outbox import relay_position
from oms.kernel.relay_http import RelayHealth, serve_probes
from oms.kernel.settings import Settings
from oms.kernel.topology import OUTBOX_TABLE, PUBLICATION, RELAY_SLOTS_TABLE, slot_name
from oms.kernel.walreader import Transaction, WalReader

log = logging.getLogger(__name__)

BATCH_EVENTS: Final = 1000  # events published together
IN_FLIGHT: Final = 4  # batches published and not yet acknowledged, at most
STATUS_INTERVAL: Final = 1  # seconds between position reports to PostgreSQL
POLL: Final = 0.2  # seconds: how quickly a stop request is noticed
# Seconds between a standby relay's tries at the slot: it takes over within about this long of the active
# one's death, before the supervisor has restarted the dead one.
STANDBY_POLL: Final = 1.0
FLUSH_INTERVAL: Final = 0.1  # seconds between the deletes of relayed rows (one statement for all of them)
# A commit reaches the WAL stream a moment before other sessions can see it, so a relayed row may not be
# deletable yet; the delete is retried for this long (rows streamed again after a restart may be long gone).
DELETE_GRACE: Final = 5.0
_SERVICE = re.compile(r"[a-z][a-z0-9_]{0,40}")

EVENTS_RELAYED: Final = Counter("oms_relay_events", "Outbox events published and acknowledged", ["service"])
PUBLISH_RETRIES: Final = Counter("oms_relay_publish_retries", "Publishes retried after no ack", ["service"])
LAG_BYTES: Final = Gauge("oms_relay_lag_bytes", "WAL bytes not yet confirmed by the relay", ["service"])
OLDEST_AGE: Final = Gauge("oms_relay_oldest_unrelayed_seconds", "Age of the oldest outbox row", ["service"])
UNCONFIRMED: Final = Gauge(
    "oms_relay_unconfirmed_events",
    "Events the broker acknowledged whose rows are not deleted and position not confirmed yet"
    " (held until the broker has surely synced them to disk, or rows not visible yet)",
    ["service"],
)
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


@dataclass(frozen=True, slots=True)
class InFlight:
    """A batch of transactions published, and the task that ends when the broker acknowledged all of it."""

    batch: list[Transaction]
    acknowledged: asyncio.Task[datetime]


@dataclass(frozen=True, slots=True)
class HeldRows:
    """Outbox rows published outside the stream (left when the slot was created), held like `Held`."""

    release_at: float
    event_ids: list[str]


class Relay:
    """One session of the relay of `service`'s database; `serve` restarts sessions after failures.

    `confirm_delay`: seconds an acknowledged event is held before its row is deleted and its position
    confirmed (0 for a broker that syncs every message to disk before acknowledging it); `health` learns
    whether the session streams from the slot (`/readyz`)."""

    def __init__(
        self,
        service: str,
        database_url: str,
        broker: Broker,
        stop: StopSignal,
        batch: int = BATCH_EVENTS,
        *,
        confirm_delay: float = 0.0,
        health: RelayHealth | None = None,
    ) -> None:
        if not _SERVICE.fullmatch(service):
            raise RelayConfigError(f"invalid service name {service!r}: lower-case letters, digits and _")
        self.service = service
        self.slot = slot_name(service)
        self.database_url = database_url
        self.broker = broker
        self.stop = stop
        self.batch = batch
        self.confirm_delay = confirm_delay
        self.health = health or RelayHealth()
        self.confirmations = Confirmations()
        self.streamed = False  # this session took the slot
        self.held: deque[Held] = deque()
        self.held_events = 0
        self.undeleted: dict[str, float] = {}  # event id → when its row was first found invisible
        self._relayed = EVENTS_RELAYED.labels(service)
        self._retried = PUBLISH_RETRIES.labels(service)
        self._commit_to_ack = COMMIT_TO_ACK.labels(service)
        self._unconfirmed = UNCONFIRMED.labels(service)

    async def run(self) -> None:
        pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                leftovers = await prepare_database(conn, self.slot)
            await self.broker.wait_for_topology()  # the operator creates it (`oms up`)
            if leftovers:
                await self._publish_leftovers(pool)
                await pool.execute(
                    "UPDATE relay_slots SET leftovers_published = true WHERE slot = $1", self.slot
                )
            cursor = await asyncio.to_thread(self._start_replication)
            self.health.streaming()
            self.streamed = True
            try:
                await self._stream(cursor, pool)
            finally:
                self.health.not_streaming("the session ended")
                cursor.connection.close()
        finally:
            await pool.close()

    def _start_replication(self) -> ReplicationCursor:
        """The cursor streaming the slot (only this one knows STATUS_INTERVAL: another cursor of the same
        connection would send a status message with every read_message)."""
        conn = psycopg2.connect(self.database_url, connection_factory=LogicalReplicationConnection)
        cursor = conn.cursor()
        try:
            cursor.start_replication(
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
        return cursor

    async def _stream(self, cursor: ReplicationCursor, pool: asyncpg.Pool) -> None:
        """Read, publish and release until stopped (then what was read is published, and what is held is
        released) or until one of them fails."""
        reader = WalReader(cursor)
        reader.resume()
        self._unconfirmed.set(0)  # what an earlier session held is streamed again
        publisher = asyncio.create_task(self._publish_all(reader), name="relay-publish")
        releaser = asyncio.create_task(self._release_all(pool, cursor, publisher), name="relay-release")
        ticker = asyncio.create_task(self._tick(reader, cursor), name="relay-tick")
        monitor = asyncio.create_task(self._monitor(pool), name="relay-monitor")
        tasks = [publisher, releaser, ticker, monitor]
        try:
            pending: set[asyncio.Future[None]] = {publisher, releaser, ticker, reader.failed}
            while not releaser.done():
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    finished.result()  # a failure ends the session
        finally:
            reader.stop()
            if reader.failed.done():
                reader.failed.exception()  # seen (it may have come after another failure)
            reader.failed.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with suppress(psycopg2.Error):
                _send_feedback(cursor, flush_lsn=self.confirmations.confirmed, force=True)

    async def _tick(self, reader: WalReader, cursor: ReplicationCursor) -> None:
        """Notice a stop request within POLL, and keep reporting our position while no WAL arrives."""
        reported = time.monotonic()
        while True:
            await asyncio.sleep(POLL)
            if self.stop.is_set() and not reader.stopped:
                reader.stop()  # the publisher publishes what was read, then ends
            if reader.reading:
                reader.drain()  # read_message sends the status message when STATUS_INTERVAL has passed
            elif time.monotonic() - reported >= STATUS_INTERVAL:  # not reading: queue full, or stopping
                _send_feedback(cursor, flush_lsn=self.confirmations.confirmed, force=True)
                reported = time.monotonic()

    async def _publish_all(self, reader: WalReader) -> None:
        """Publish what the reader queues, in batches, up to IN_FLIGHT batches awaiting their acknowledgements
        at once; hold each acknowledged batch, in order."""
        flying: deque[InFlight] = deque()
        before = self.confirmations.confirmed
        try:
            while (batch := await self._next_batch(reader, flying)) is not None:
                if batch:  # else the acknowledgements of the oldest batch came meanwhile
                    events = [event for transaction in batch for event in transaction.events]
                    flying.append(InFlight(batch, asyncio.create_task(self._publish(events))))
                while flying and (flying[0].acknowledged.done() or len(flying) >= IN_FLIGHT):
                    before = await self._hold_next(flying, before)
            while flying:
                before = await self._hold_next(flying, before)
        finally:
            for in_flight in flying:
                in_flight.acknowledged.cancel()

    async def _hold_next(self, flying: deque[InFlight], before: int) -> int:
        acked_at = await flying[0].acknowledged
        return self._hold(flying.popleft().batch, before, acked_at)

    async def _next_batch(self, reader: WalReader, flying: deque[InFlight]) -> list[Transaction] | None:
        """Up to `batch` events' worth of transactions; None once the reader stopped and all is taken.
        While it waits, a batch whose acknowledgements came is held."""
        while not reader.queue:
            if reader.stopped:
                return None
            reader.ready.clear()
            if not flying:
                await reader.ready.wait()
                continue
            arrived = asyncio.ensure_future(reader.ready.wait())
            await asyncio.wait([arrived, flying[0].acknowledged], return_when=asyncio.FIRST_COMPLETED)
            arrived.cancel()
            return []  # nothing new: let the caller hold what was acknowledged
        return reader.take(self.batch)

    async def _publish(self, events: list[Outgoing]) -> datetime:
        """Publish `events` and wait until the broker has acknowledged every one; returns when."""
        if events:
            await self.broker.publish(events, give_up=self.stop.is_set, on_retry=self._retried.inc)
            self._relayed.inc(len(events))
        return datetime.now(UTC)

    def _hold(self, batch: list[Transaction], before: int, acked_at: datetime) -> int:
        """Hold the `batch` acknowledged at `acked_at` for `confirm_delay`; returns the position after it."""
        transactions = []
        for transaction in batch:
            if transaction.events:
                age = (acked_at - transaction.commit_time).total_seconds()
                self._commit_to_ack.observe(max(age, 0.0))
            ids = tuple(e.msg_id for e in transaction.events)
            transactions.append(Relayed(before, transaction.end_lsn, ids))
            before = transaction.end_lsn
        held = Held(time.monotonic() + self.confirm_delay, tuple(transactions))
        self.held.append(held)
        self.held_events += held.events
        self._unconfirmed.set(self.held_events + len(self.undeleted))
        return before

    async def _release_all(
        self, pool: asyncpg.Pool, cursor: ReplicationCursor, publisher: asyncio.Task[None]
    ) -> None:
        """Every FLUSH_INTERVAL, release what is due; ends once the publisher ended and nothing is held."""
        while not (publisher.done() and not self.held):
            await asyncio.sleep(FLUSH_INTERVAL)
            await self._release(pool, cursor)

    async def _release(self, pool: asyncpg.Pool, cursor: ReplicationCursor) -> None:
        """Delete the rows of the events whose hold is over (and retry invisible ones), then confirm."""
        now = time.monotonic()
        due: list[Held] = []
        while self.held and self.held[0].release_at <= now:
            due.append(self.held.popleft())
        if not due and not self.undeleted:
            return
        await self._forget(pool, [i for held in due for t in held.transactions for i in t.event_ids])
        self.held_events -= sum(held.events for held in due)
        _send_feedback(cursor, flush_lsn=self.confirmations.release(due, self.undeleted.keys()))
        self._unconfirmed.set(self.held_events + len(self.undeleted))

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
        held: deque[HeldRows] = deque()
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
            await self._publish([Outgoing(r["subject"], r["payload"].encode(), r["id"]) for r in rows])
            held.append(HeldRows(time.monotonic() + self.confirm_delay, [r["id"] for r in rows]))
            await self._forget_held(pool, held, wait=False)
            after, total = rows[-1]["seq"], total + len(rows)
        await self._forget_held(pool, held, wait=True)
        if total:
            log.warning(
                "relay %s: published %d outbox rows left from before the slot existed", self.service, total
            )

    async def _forget_held(self, pool: asyncpg.Pool, held: deque[HeldRows], wait: bool) -> None:
        """Delete the held rows whose hold is over; with `wait`, all of them, waiting as long as needed."""
        while held and (wait or held[0].release_at <= time.monotonic()):
            rows = held.popleft()
            await asyncio.sleep(max(0.0, rows.release_at - time.monotonic()))
            await self._forget(pool, rows.event_ids)

    async def _monitor(self, pool: asyncpg.Pool, every: float = 2.0) -> None:
        while True:
            with suppress(asyncpg.PostgresError, OSError):
                position = await relay_position(pool, self.slot)
                LAG_BYTES.labels(self.service).set(position.lag_bytes or 0)
                OLDEST_AGE.labels(self.service).set(position.oldest_seconds or 0)
            await asyncio.sleep(every)


def _send_feedback(cursor: ReplicationCursor, flush_lsn: int, force: bool = False) -> None:
    """Report `flush_lsn` as processed: sent with the next status message, or now if `force`."""
    cursor.send_feedback(flush_lsn=flush_lsn, force=force)  # type: ignore[no-untyped-call]


async def prepare_database(conn: asyncpg.Connection, slot: str) -> bool:
    """Check the server, the tables and the publication, create the slot if missing; True if the rows left in
    the outbox when the slot was created are still to be published (by this relay or one that died)."""
    level = await conn.fetchval("SHOW wal_level")
    if level != "logical":
        raise RelayConfigError(
            f"PostgreSQL runs with wal_level={level}, but the relay reads the write-ahead log by logical "
            "replication: set wal_level=logical (postgresql.conf or -c wal_level=logical) and restart it"
        )
    for table in (OUTBOX_TABLE, RELAY_SLOTS_TABLE):
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            raise RelayConfigError(f"no {table} table in this database: run the service's migrations first")
    # The service's migrations create it: the relay's role may not (it owns no table).
    if not await conn.fetchval("SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1)", PUBLICATION):
        raise RelayConfigError(
            f"no publication {PUBLICATION} in this database: run the service's migrations first"
        )
    row = await conn.fetchrow(
        "SELECT database, wal_status, active FROM pg_replication_slots WHERE slot_name = $1", slot
    )
    if row is not None and row["database"] != await conn.fetchval("SELECT current_database()"):
        raise RelayConfigError(f"replication slot {slot} belongs to database {row['database']}")
    if row is not None and row["wal_status"] == "lost" and not row["active"]:
        log.warning("replication slot %s was invalidated (WAL removed); recreating it", slot)
        await conn.execute("SELECT pg_drop_replication_slot($1)", slot)
        row = None
    if row is None:
        await conn.execute(
            "INSERT INTO relay_slots (slot, leftovers_published) VALUES ($1, false) "
            "ON CONFLICT (slot) DO UPDATE SET leftovers_published = false",
            slot,
        )
        try:
            await conn.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
            log.info("created replication slot %s", slot)
        except asyncpg.DuplicateObjectError:
            pass  # another replica created it a moment ago
    pending = await conn.fetchval("SELECT NOT leftovers_published FROM relay_slots WHERE slot = $1", slot)
    return bool(pending)


async def serve(
    service: str,
    database_url: str,
    nats: NatsAccess,
    stop: StopSignal,
    confirm_delay: float = 0.0,
    health: RelayHealth | None = None,
) -> None:
    """Relay until `stop` is set, restarting after any failure (with backoff) from the confirmed position;
    `health` follows whether it streams and is connected to the broker."""
    health = health or RelayHealth()
    failures = 0
    while not stop.is_set():
        relay: Relay | None = None
        try:
            broker = await JetStreamBroker.connect(nats)
            health.broker = broker
            try:
                relay = Relay(service, database_url, broker, stop, confirm_delay=confirm_delay, health=health)
                await relay.run()
            finally:
                await broker.close()
            continue
        except (RelayConfigError, asyncio.CancelledError):
            raise
        except SlotBusy as exc:
            failures = 0  # the database and the broker answered
            if not health.slot.startswith("unavailable: standing by"):
                log.info("relay %s: standing by, the slot is in use (%s)", service, exc)
            health.not_streaming("standing by: another relay streams the slot")
            await _sleep_unless(stop, STANDBY_POLL)
            continue
        except PublishAborted:
            continue  # only raised once stop is set
        except Exception as exc:
            # The backoff grows with failures in a row only: a session that streamed starts it afresh (a
            # relay that had survived many outages waited 10 s after each new one: a standby took 47 s to
            # take over under chaos).
            failures = 1 if relay is not None and relay.streamed else failures + 1
            health.not_streaming(f"{type(exc).__name__}; restarting")
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
    nats: NatsAccess,
    stop_event: threading.Event,
    metrics_port: int | None = None,
    confirm_delay: float = 0.0,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Run the relay of `service` until `stop_event` is set (from the main thread, SIGTERM/SIGINT set it),
    publishing as `nats.identity`, holding acknowledged events `confirm_delay` seconds (see
    `Settings.relay_hold_seconds`), its metrics, `/livez` and `/readyz` on `metrics_host:metrics_port`.
    Raises RelayConfigError when the database cannot be relayed (e.g. wal_level is not logical)."""
    if confirm_delay:
        log.info("relay %s: holding acknowledged events %.3gs before confirming them", service, confirm_delay)

    async def relay_and_answer() -> None:
        health = RelayHealth()
        probes = await serve_probes(health, metrics_host, metrics_port) if metrics_port is not None else None
        try:
            await serve(service, database_url, nats, stop_event, confirm_delay, health)
        finally:
            if probes is not None:
                probes.close()

    with _stop_on_signals(stop_event):
        _run_loop(relay_and_answer())


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it wherever it builds (not on Windows)
        asyncio.run(main)
        return
    uvloop.run(main)  # less loop overhead per wake-up: 5–8 % less CPU per event than asyncio's loop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oms.kernel.relay", description=__doc__.split("\n")[0])
    parser.add_argument("--service", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--nats-url", help="[default: OMS_NATS_URL]; credentials from OMS_NATS_* settings")
    parser.add_argument("--metrics-port", type=int, help="/metrics, /livez and /readyz")
    parser.add_argument("--metrics-host", help="[default: OMS_METRICS_HOST]")
    parser.add_argument(
        "--confirm-delay",
        type=float,
        help="seconds an acknowledged event is held before it is confirmed"
        " [default: OMS_RELAY_CONFIRM_DELAY, or 2 × OMS_NATS_SYNC_INTERVAL]",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    try:
        delay = settings.relay_hold_seconds() if args.confirm_delay is None else args.confirm_delay
    except ValueError as exc:
        print(f"relay: OMS_NATS_SYNC_INTERVAL or OMS_RELAY_CONFIRM_DELAY: {exc}", file=sys.stderr)
        return 2
    try:
        nats = access_for(settings, f"relay-{args.service}")
        if args.nats_url:
            nats = nats.with_servers(args.nats_url)
        run_relay(
            args.service,
            args.database_url,
            nats,
            threading.Event(),
            args.metrics_port,
            delay,
            args.metrics_host or settings.metrics_host,
        )
    except (RelayConfigError, NatsConfigError) as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
