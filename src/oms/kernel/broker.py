"""The message broker behind a small interface, and its NATS JetStream implementation.

The interface is what the relay, the consumers and the dead-letter tools need, and no more, so that Kafka can
be a second implementation: publish with a message id the broker deduplicates by, fetch from a durable
consumer, settle each delivery (ack, nak with a delay, term), and a dead-letter queue to list and empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RawStreamMsg,
    StorageType,
    StreamConfig,
)

from oms.kernel.market import MARKET_STREAM, MARKET_SUBJECTS
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.pull import PullConsumer
from oms.kernel.topology import (
    BACKOFFICE_BUCKET,
    BACKOFFICE_BUCKET_STREAM,
    CONSUMERS,
    DLQ_ROOT,
    EVENT_SUBJECTS,
    EVENTS_STREAM,
    SHARED_DLQ_STREAM,
    Consumer,
)

# A stream without a leader (a NATS cluster elects one 4–9 s after losing it: raft's election timeout) stores
# nothing: publishes are retried at least every second, so the stream stores again within a second of the
# election, not up to 5 s after it (docs/reliability.md, chaos on a cluster).
PUBLISH_RETRY_MAX = 1.0

log = logging.getLogger(__name__)

MAX_DELIVER: Final = 5  # deliveries of one message before the consumer runner dead-letters it
DUPLICATE_WINDOW: Final = 120.0  # seconds in which a repeated Nats-Msg-Id is dropped
EVENTS_MAX_AGE: Final = 7 * 24 * 3600.0  # consumers down for longer than this lose events
# The market feed retries an unacknowledged quote within seconds; a short window keeps the server's memory of
# message ids small at hundreds of quotes a second.
MARKET_DUPLICATE_WINDOW: Final = 30.0
# Redelivery of a delivery that was never settled (its consumer died): also the longest a handler may take.
# Failed handlers are retried sooner, by a nak with the consumer runner's delay. (No server-side BackOff:
# the server then stretches every nak delay by the difference between backoff steps.)
ACK_WAIT: Final = 30.0
# The server stops redelivering after this many deliveries. It is above MAX_DELIVER so that a consumer that
# dies between dead-lettering a message and settling it still gets the message back to finish the job.
SERVER_MAX_DELIVER: Final = MAX_DELIVER + 3

MSG_ID: Final = "Nats-Msg-Id"
ERROR_HEADER: Final = "Oms-Error"
SUBJECT_HEADER: Final = "Oms-Original-Subject"
COUNT_HEADER: Final = "Oms-Delivery-Count"
CONSUMER_HEADER: Final = "Oms-Consumer"
ORIGINAL_ID_HEADER: Final = "Oms-Original-Msg-Id"

_PARKED: Final = "oms_dlq_shared_parked.>"  # the shared queue's subjects while its letters are moved
_STREAM_IN_USE: Final = 10058  # JetStream: stream name already in use with a different configuration


class PublishAborted(RuntimeError):
    """Publishing stopped (shutdown or give-up) before every message was acknowledged."""


@dataclass(frozen=True)
class Outgoing:
    """A message to publish; the broker drops a repeat of `msg_id` within its duplicate window."""

    subject: str
    payload: bytes
    msg_id: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeadLetter:
    """A message a consumer gave up on, as kept in that consumer's dead-letter queue."""

    seq: int  # its place in the consumer's queue
    subject: str  # where it was originally published
    consumer: str
    error: str
    deliveries: int
    msg_id: str
    payload: bytes
    failed_at: datetime | None

    @property
    def id(self) -> str:
        """How operators name it: `<consumer>:<seq>` (each consumer's queue counts from 1)."""
        return f"{self.consumer}:{self.seq}"


@dataclass(frozen=True)
class ConsumerStats:
    """How far behind a durable consumer is, for operators."""

    consumer: str
    pending: int  # in the stream, not yet delivered
    ack_pending: int  # delivered, not yet acknowledged
    redelivered: int  # delivered more than once and not yet acknowledged
    waiting: int  # fetch requests waiting for messages (consumers connected and idle)


class Delivery(Protocol):
    """One delivery of a message to a durable consumer."""

    @property
    def subject(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def msg_id(self) -> str: ...
    @property
    def attempt(self) -> int: ...  # 1 on the first delivery
    @property
    def position(self) -> int: ...  # the message's place in the stream (a Kafka offset later)
    async def ack(self) -> None: ...
    async def nak(self, delay: float) -> None: ...
    async def term(self) -> None: ...


class Broker(Protocol):
    @property
    def connected(self) -> bool: ...
    async def wait_for_topology(self, consumer: str | None = None) -> None: ...
    async def publish(
        self,
        messages: Sequence[Outgoing],
        *,
        give_up: Callable[[], bool] | None = None,
        on_retry: Callable[[int], None] | None = None,
    ) -> None: ...
    async def fetch(self, consumer: str, batch: int, max_wait: float) -> list[Delivery]: ...
    async def dead_letter(self, delivery: Delivery, consumer: str, error: str) -> None: ...
    async def dead_letters(
        self, limit: int = 1000, start: int = 1, consumer: str | None = None
    ) -> list[DeadLetter]: ...
    async def remove_dead_letter(self, letter: DeadLetter) -> None: ...
    async def close(self) -> None: ...


def one_line(text: str, limit: int = 2000) -> str:
    """Header-safe text: headers may not contain line breaks."""
    return " ".join(text.split())[:limit]


class JetStreamDelivery:
    __slots__ = ("_msg",)

    def __init__(self, msg: Msg) -> None:
        self._msg = msg

    @property
    def subject(self) -> str:
        return self._msg.subject

    @property
    def data(self) -> bytes:
        return self._msg.data

    @property
    def msg_id(self) -> str:
        return (self._msg.headers or {}).get(MSG_ID, "")

    @property
    def attempt(self) -> int:
        return self._msg.metadata.num_delivered

    @property
    def position(self) -> int:
        return self._msg.metadata.sequence.stream

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay: float) -> None:
        await self._msg.nak(delay=delay)

    async def term(self) -> None:
        await self._msg.term()


class JetStreamBroker:
    """NATS JetStream: stream OMS_EVENTS (the relays' subjects), each consumer's dead letters in a stream of
    its own (OMS_DLQ_<CONSUMER>, `oms_dlq.<consumer>.>`), market data in OMS_MARKET (`oms.market.>`), file
    storage."""

    def __init__(self, nc: NatsClient, *, ack_timeout: float = 5.0, replicas: int = 1) -> None:
        self._nc = nc
        self._replicas = replicas  # 3 on a NATS cluster: a single node can lose acknowledged messages
        self._js: JetStreamContext = nc.jetstream(timeout=ack_timeout)
        self._ack_timeout = ack_timeout
        self._pullers: dict[str, PullConsumer] = {}

    @classmethod
    async def connect(cls, access: NatsAccess, *, once: bool = False, replicas: int = 1) -> JetStreamBroker:
        """Connected as `access.identity` (see `connect_nats`)."""
        return cls(await connect_nats(access, once=once), replicas=replicas)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def connection(self) -> NatsClient:
        """The NATS connection, for what reads the broker beside the events (kernel/market_view.py)."""
        return self._nc

    async def close(self) -> None:
        """Send what is buffered (acks included) and disconnect."""
        if self._nc.is_closed:
            return
        for puller in self._pullers.values():
            with suppress(nats.errors.Error):
                await puller.stop()
        with suppress(nats.errors.Error, TimeoutError):
            await self._nc.flush(timeout=2)
        await self._nc.close()

    async def wait_for_topology(self, consumer: str | None = None, *, poll: float = 1.0) -> None:
        """Until the events stream (or durable `consumer` on it) exists: only the operator creates them
        (`oms up`, before it starts the services and relays)."""
        what = f"durable consumer {consumer} on {EVENTS_STREAM}" if consumer else f"stream {EVENTS_STREAM}"
        waiting = False
        while True:
            try:
                if consumer:
                    await self._js.consumer_info(EVENTS_STREAM, consumer)
                else:
                    await self._js.stream_info(EVENTS_STREAM)
            except (nats.js.errors.NotFoundError, nats.errors.NoRespondersError, TimeoutError):
                if not waiting:
                    log.warning("waiting for %s: the operator creates it (oms up, or oms dlq list)", what)
                    waiting = True
                await asyncio.sleep(poll)
                continue
            if waiting:
                log.info("%s exists; going on", what)
            return

    async def ensure_topology(self) -> None:
        """Create (or bring up to date) the streams and the durable consumers; safe to run concurrently.
        Needs the operator identity: no other may create, change or purge streams and consumers."""
        await self._ensure_stream(
            StreamConfig(
                name=EVENTS_STREAM,
                subjects=list(EVENT_SUBJECTS),
                storage=StorageType.FILE,
                num_replicas=self._replicas,
                duplicate_window=DUPLICATE_WINDOW,
                max_age=EVENTS_MAX_AGE,
            )
        )
        # After OMS_EVENTS, which took `oms.>` before there was market data: two streams may not overlap.
        await self._ensure_stream(
            StreamConfig(
                name=MARKET_STREAM,
                subjects=[MARKET_SUBJECTS],
                storage=StorageType.FILE,
                num_replicas=self._replicas,
                duplicate_window=MARKET_DUPLICATE_WINDOW,
                # The last value of each subject: a reader starting now gets every symbol's latest quote and
                # instrument at once, and the stream never grows past two messages a symbol.
                max_msgs_per_subject=1,
                discard=DiscardPolicy.OLD,
            )
        )
        await self._ensure_stream(backoffice_bucket(self._replicas))
        shared = await self._park_shared_dead_letters()
        for consumer in CONSUMERS.values():
            await self._ensure_stream(
                StreamConfig(
                    name=consumer.dead_letter_stream,
                    subjects=[consumer.dead_letters],
                    storage=StorageType.FILE,
                    num_replicas=self._replicas,
                    duplicate_window=DUPLICATE_WINDOW,
                )
            )
            await self._js.add_consumer(EVENTS_STREAM, _consumer_config(consumer, self._replicas))
        if shared:
            await self._move_shared_dead_letters()

    async def _park_shared_dead_letters(self) -> bool:
        """A data folder from before per-consumer queues has one OMS_DLQ stream on `oms_dlq.>`, which the
        consumers' streams would overlap: move its subjects aside (its messages stay) until they are moved.
        True when there is such a stream."""
        try:
            info = await self._js.stream_info(SHARED_DLQ_STREAM)
        except nats.js.errors.NotFoundError:
            return False
        if info.config.subjects != [_PARKED]:
            await self._js.update_stream(replace(info.config, subjects=[_PARKED]))
        return True

    async def _move_shared_dead_letters(self) -> None:
        """Each dead letter of the shared stream into its consumer's stream, then the shared stream goes. A
        crash midway repeats the move of at most one letter (removed from the shared stream once stored)."""
        moved = 0
        while True:
            try:
                raw = await self._js.get_msg(SHARED_DLQ_STREAM, seq=1, subject=f"{DLQ_ROOT}.>", next=True)
            except nats.js.errors.NotFoundError:
                break
            headers = {k: v for k, v in (raw.headers or {}).items() if k != MSG_ID}
            await self.publish([Outgoing(raw.subject or "", raw.data or b"", f"moved:{raw.seq}", headers)])
            await self._js.delete_msg(SHARED_DLQ_STREAM, raw.seq or 0)
            moved += 1
        await self._js.delete_stream(SHARED_DLQ_STREAM)
        log.info("moved %d dead letter(s) from %s into the consumers' own queues", moved, SHARED_DLQ_STREAM)

    async def _ensure_stream(self, config: StreamConfig) -> None:
        try:
            await self._js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_IN_USE:
                raise
            # Replicas are chosen when the stream is created; changing them is an operator's decision, not
            # something the last process to start should do.
            existing = (await self._js.stream_info(config.name or "")).config
            await self._js.update_stream(replace(config, num_replicas=existing.num_replicas))

    async def publish(
        self,
        messages: Sequence[Outgoing],
        *,
        give_up: Callable[[], bool] | None = None,
        on_retry: Callable[[int], None] | None = None,
    ) -> None:
        """Publish all `messages` and wait until the broker has acknowledged each one, retrying the others
        (same message id, so a retry of a stored message is dropped) with backoff until `give_up()`."""
        pending = list(messages)
        delay = 0.1
        while pending:
            pending = await self._publish_once(pending)
            if not pending:
                return
            if give_up is not None and give_up():
                raise PublishAborted(f"{len(pending)} message(s) not acknowledged")
            if on_retry is not None:
                on_retry(len(pending))
            log.warning("%d publish(es) not acknowledged; retrying in %.1fs", len(pending), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, PUBLISH_RETRY_MAX)

    async def _publish_once(self, messages: list[Outgoing]) -> list[Outgoing]:
        """Publish pipelined, then wait for every acknowledgement; returns the messages not acknowledged."""
        acks: list[asyncio.Future[Any] | None] = []
        for message in messages:
            headers = {**message.headers, MSG_ID: message.msg_id}
            try:
                acks.append(await self._js.publish_async(message.subject, message.payload, headers=headers))
            except Exception as exc:  # a closed or congested connection: this one is retried
                log.debug("publish of %s failed: %s", message.msg_id, exc)
                acks.append(None)
        waiting = [ack for ack in acks if ack is not None]
        if waiting:
            await asyncio.wait(waiting, timeout=self._ack_timeout)
        for ack in waiting:
            ack.cancel()  # no-op when done; frees the in-flight slot of an ack that never came
        return [message for message, ack in zip(messages, acks, strict=True) if not _acknowledged(ack)]

    async def fetch(self, consumer: str, batch: int, max_wait: float) -> list[Delivery]:
        puller = self._pullers.get(consumer)
        if puller is None:
            puller = PullConsumer(self._nc, EVENTS_STREAM, consumer)
            await puller.start()
            self._pullers[consumer] = puller
        return [JetStreamDelivery(m) for m in await puller.take(batch, max_wait)]

    async def dead_letter(self, delivery: Delivery, consumer: str, error: str) -> None:
        """Move `delivery` to the dead-letter queue with why and how often it failed, then settle it."""
        headers = {
            ERROR_HEADER: one_line(error) or "unknown error",
            SUBJECT_HEADER: delivery.subject,
            COUNT_HEADER: str(delivery.attempt),
            CONSUMER_HEADER: consumer,
            ORIGINAL_ID_HEADER: delivery.msg_id,
        }
        # One dead letter per failed stream message and consumer, however often this is retried.
        msg_id = f"dlq:{consumer}:{delivery.position}"
        deadline = time.monotonic() + 30
        await self.publish(
            [
                Outgoing(
                    CONSUMERS[consumer].dead_letter_subject(delivery.subject), delivery.data, msg_id, headers
                )
            ],
            give_up=lambda: time.monotonic() > deadline,
        )
        await delivery.term()

    async def dead_letters(
        self, limit: int = 1000, start: int = 1, consumer: str | None = None
    ) -> list[DeadLetter]:
        """Up to `limit` dead letters of `consumer` (None: of every consumer, one queue after the other) from
        queue position `start` on, oldest first."""
        letters: list[DeadLetter] = []
        for name in [consumer] if consumer else CONSUMERS:
            letters += await self._dead_letters_of(CONSUMERS[name], limit - len(letters), start)
        return letters

    async def _dead_letters_of(self, consumer: Consumer, limit: int, seq: int) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        while len(letters) < limit:
            try:
                raw = await self._js.get_msg(
                    consumer.dead_letter_stream, seq=seq, subject=consumer.dead_letters, next=True
                )
            except nats.js.errors.NotFoundError:
                break
            letters.append(_dead_letter(raw, consumer))
            seq = letters[-1].seq + 1
        return letters

    async def remove_dead_letter(self, letter: DeadLetter) -> None:
        await self._js.delete_msg(CONSUMERS[letter.consumer].dead_letter_stream, letter.seq)

    async def consumer_stats(self, consumer: str) -> ConsumerStats:
        """Pending, unacknowledged and redelivered counts of durable consumer `consumer`."""
        info = await self._js.consumer_info(EVENTS_STREAM, consumer)
        return ConsumerStats(
            consumer=consumer,
            pending=info.num_pending or 0,
            ack_pending=info.num_ack_pending or 0,
            redelivered=info.num_redelivered or 0,
            waiting=info.num_waiting or 0,
        )


async def create_topology(operator: NatsAccess, replicas: int = 1) -> None:
    """Create or update the streams and durable consumers, as the operator (`oms up`, before the services)."""
    broker = await JetStreamBroker.connect(operator, once=True, replicas=replicas)
    try:
        await broker.ensure_topology()
    finally:
        await broker.close()


def _acknowledged(ack: asyncio.Future[Any] | None) -> bool:
    return ack is not None and ack.done() and not ack.cancelled() and ack.exception() is None


def backoffice_bucket(replicas: int) -> StreamConfig:
    """The back office's key-value bucket, as nats-py's `create_key_value` would make it (one value per key,
    direct gets), with per-message TTLs: a lease expires on the server's clock (nats-server 2.11+)."""
    return StreamConfig(
        name=BACKOFFICE_BUCKET_STREAM,
        subjects=[f"$KV.{BACKOFFICE_BUCKET}.>"],
        storage=StorageType.FILE,
        num_replicas=replicas,
        max_msgs_per_subject=1,
        discard=DiscardPolicy.NEW,
        duplicate_window=DUPLICATE_WINDOW,
        allow_rollup_hdrs=True,
        deny_delete=True,
        allow_direct=True,
        allow_msg_ttl=True,
    )


def _consumer_config(consumer: Consumer, replicas: int) -> ConsumerConfig:
    return ConsumerConfig(
        name=consumer.name,
        durable_name=consumer.name,
        filter_subject=consumer.subjects,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT,
        max_deliver=SERVER_MAX_DELIVER,
        num_replicas=replicas,
    )


def _dead_letter(raw: RawStreamMsg, consumer: Consumer) -> DeadLetter:
    headers = raw.headers or {}
    return DeadLetter(
        seq=raw.seq or 0,
        subject=headers.get(SUBJECT_HEADER, ""),
        consumer=consumer.name,  # the queue it is in, whatever its headers say
        error=headers.get(ERROR_HEADER, ""),
        deliveries=int(headers.get(COUNT_HEADER, "0")),
        msg_id=headers.get(ORIGINAL_ID_HEADER, ""),
        payload=raw.data or b"",
        failed_at=raw.time.astimezone(UTC) if raw.time else None,
    )
