"""JetStream figures: the broker's own limit (acked publishes/s on a scratch stream of the same server) and,
read back after a run, how long each event took from its creation to being stored in the stream."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from oms.bench.stats import latency_summary
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.topology import EVENTS_STREAM, SUBJECT_ROOT, subject_of

UNAVAILABLE_RETRIES = 10


async def last_seq(access: NatsAccess, stream: str = EVENTS_STREAM) -> int:
    nc = await connect_nats(access, once=True)
    try:
        info = await nc.jetstream().stream_info(stream)
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def read_stream(
    access: NatsAccess,
    stream: str,
    subjects: str,
    after_seq: int,
    until_seq: int,
    visit: Callable[[bytes, datetime], None],
) -> int:
    """`visit(payload, stored_at)` for each message on `subjects` of `stream` in (after_seq, until_seq]."""
    if until_seq <= after_seq:
        return 0
    nc = await connect_nats(access, once=True)
    seen = 0
    try:
        js = nc.jetstream()
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after_seq + 1,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            max_waiting=1,
        )
        subscription = await js.pull_subscribe(subjects, stream=stream, config=config)
        unavailable = 0
        while True:
            try:
                messages = await subscription.fetch(1000, timeout=2)
            except (nats.errors.TimeoutError, TimeoutError):
                break
            except nats.js.errors.ServiceUnavailableError:
                # A replicated stream's consumer may answer 503 a moment (its leader busy or being elected).
                unavailable += 1
                if unavailable > UNAVAILABLE_RETRIES:
                    raise
                await asyncio.sleep(1)
                continue
            for message in messages:
                metadata = message.metadata
                if metadata.sequence.stream > until_seq:
                    return seen
                visit(message.data, metadata.timestamp)
                seen += 1
                if metadata.sequence.stream == until_seq:
                    return seen
        return seen
    finally:
        await nc.close()


async def event_latencies(access: NatsAccess, after_seq: int, until_seq: int) -> dict[str, list[float]]:
    """Seconds from each event's `occurredAt` (set just before its transaction commits) to the moment
    JetStream stored it (after the relay read it from the WAL and published it), by event type."""
    by_type: dict[str, list[float]] = defaultdict(list)

    def visit(payload: bytes, stored_at: datetime) -> None:
        try:
            event = json.loads(payload)
            occurred = datetime.fromisoformat(event["occurredAt"].replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            return
        by_type[str(event.get("type"))].append((stored_at - occurred).total_seconds())

    await read_stream(access, EVENTS_STREAM, f"{SUBJECT_ROOT}.>", after_seq, until_seq, visit)
    return dict(by_type)


async def matched_stored_at(
    access: NatsAccess, after_seq: int, until_seq: int, order_ids: set[str]
) -> dict[str, datetime]:
    """When JetStream stored the `order.matched` event of each of these orders (after the transaction that
    executed it committed and the relay read it from the WAL)."""
    stored: dict[str, datetime] = {}

    def visit(payload: bytes, stored_at: datetime) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if event.get("type") == "order.matched" and event.get("orderId") in order_ids:
            stored[event["orderId"]] = stored_at

    await read_stream(access, EVENTS_STREAM, subject_of("order.matched"), after_seq, until_seq, visit)
    return stored


async def stream_replicas(access: NatsAccess, stream: str = EVENTS_STREAM) -> int:
    """How many replicas the system's `stream` has (1 on a single node, 3 in `oms up --cluster`)."""
    nc = await connect_nats(access, once=True)
    try:
        info = await nc.jetstream().stream_info(stream)
        return int(info.config.num_replicas or 1)
    finally:
        await nc.close()


async def publish_limit(
    access: NatsAccess,
    seconds: float = 5.0,
    in_flight: int = 4000,
    payload_bytes: int = 450,
    replicas: int = 1,
    acks: int = 300,
) -> dict[str, Any]:
    """Acked publishes/s to a scratch file-stored stream of `replicas` replicas on the same broker (the
    servers' own fsync setting applies), pipelined with `in_flight` unacknowledged publishes, each with a
    unique message id; first, the round trip of `acks` publishes one at a time (publish → stored on a
    majority of the replicas → ack), which is what one event waits for."""
    stream = f"BENCH_LIMIT_{uuid.uuid4().hex[:8].upper()}"
    subject = f"bench_limit.{stream.lower()}"
    nc = await connect_nats(access, once=True)
    js = nc.jetstream(publish_async_max_pending=in_flight)
    await js.add_stream(
        StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE, num_replicas=replicas)
    )
    payload = b"x" * payload_bytes
    acked = failed = 0
    round_trips: list[float] = []
    try:
        for n in range(acks):
            sent_at = time.perf_counter()
            await js.publish(subject, payload, headers={"Nats-Msg-Id": f"{stream}-ack-{n}"})
            round_trips.append(time.perf_counter() - sent_at)
        started = time.perf_counter()
        deadline = started + seconds
        pending: set[asyncio.Future[Any]] = set()

        def done(future: asyncio.Future[Any]) -> None:
            nonlocal acked, failed
            pending.discard(future)
            if future.cancelled() or future.exception() is not None:
                failed += 1
            else:
                acked += 1

        sent = 0
        while time.perf_counter() < deadline:
            future = await js.publish_async(subject, payload, headers={"Nats-Msg-Id": f"{stream}-{sent}"})
            pending.add(future)
            future.add_done_callback(done)
            sent += 1
        if pending:
            await asyncio.wait(list(pending), timeout=10)
        elapsed = time.perf_counter() - started
    finally:
        await js.delete_stream(stream)
        await nc.close()
    return {
        "acked_per_s": round(acked / elapsed, 1),
        "acked": acked,
        "failed": failed,
        "in_flight": in_flight,
        "payload_bytes": payload_bytes,
        "seconds": round(elapsed, 2),
        "replicas": replicas,
        "ack_round_trip": latency_summary(round_trips),
    }
