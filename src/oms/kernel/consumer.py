"""Running a service's durable consumer: take what has arrived, parse each event, hand the batch to the
service's handler, settle every delivery. A failed event is retried with a growing delay; after
`max_deliver` deliveries it goes to the dead-letter queue, and so does a message that is not a valid event.

The handler gets a batch in stream order and applies it in one database transaction, recording each event in
the inbox (`inbox.first_deliveries`) in that transaction: delivery is at-least-once, and one commit per batch
instead of one per event is what lets a consumer keep up with the HTTP side. It answers, per event, None
(done: applied, or a duplicate) or the exception that kept that event from being applied (nothing of it was
stored). If the handler raises, nothing of the batch was stored: each event is then tried alone, so that one
bad event cannot hold back the others.

Before any of that, an event its producer could not have published — a type on another type's subject, or a
type of another service — is dead-lettered unapplied: the broker's permissions already refuse such publishes
(docs/decisions/009); this holds even if they are misconfigured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from prometheus_client import Counter, Histogram

from oms.kernel.broker import MAX_DELIVER, Broker, Delivery
from oms.kernel.events import AnyEvent, Envelope, MalformedEvent, parse
from oms.kernel.topology import CONSUMERS

log = logging.getLogger(__name__)

Outcome = Exception | None  # None: done; an exception: not applied, deliver again
Handler = Callable[[Envelope[AnyEvent]], Awaitable[None]]
BatchHandler = Callable[[Sequence[Envelope[AnyEvent]]], Awaitable[Sequence[Outcome]]]

MESSAGES: Final = Counter(
    "oms_consumer_messages", "Deliveries settled by a consumer, by outcome", ["consumer", "outcome"]
)
BATCH_SIZE: Final = Histogram(
    "oms_consumer_batch_events",
    "Events handed to a consumer's handler at once",
    ["consumer"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)

HANDLING: Final = Histogram(
    "oms_consumer_batch_seconds",
    "Time to handle a batch of events and settle its deliveries",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class StopSignal(Protocol):
    """Anything with `is_set()`: a threading.Event, an asyncio.Event, a multiprocessing Event."""

    def is_set(self) -> bool: ...


class NotYetVisible(Exception):
    """An event about a row that should be there but is not: maybe committed a moment ago and not yet visible
    to other transactions (a relay may read a commit from the WAL just before the committing backend makes it
    visible, and the answer to the event it carried can come back first). Its first retry comes at once."""


@dataclass(frozen=True)
class RetryPolicy:
    max_deliver: int = MAX_DELIVER
    nak_delays: tuple[float, ...] = (1.0, 5.0, 15.0, 30.0)  # seconds before the 2nd, 3rd, ... delivery
    soon: float = 0.05  # before the 2nd delivery of a NotYetVisible failure

    def delay_after(self, attempt: int, exc: Exception | None = None) -> float:
        if attempt == 1 and isinstance(exc, NotYetVisible):
            return min(self.soon, self.nak_delays[0])
        return self.nak_delays[min(attempt, len(self.nak_delays)) - 1]


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def one_at_a_time(handler: Handler) -> BatchHandler:
    """A batch handler made of a handler of one event (which opens its own transaction per event)."""

    async def handle(events: Sequence[Envelope[AnyEvent]]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for event in events:
            try:
                await handler(event)
                outcomes.append(None)
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    return handle


class ConsumerRunner:
    """Feeds the events of durable consumer `consumer` to `handler`, up to `batch` at a time, one batch
    after another (so the events of one order are applied in stream order)."""

    def __init__(
        self,
        broker: Broker,
        consumer: str,
        handler: BatchHandler,
        *,
        policy: RetryPolicy | None = None,
        batch: int = 200,
        fetch_timeout: float = 1.0,
    ) -> None:
        if consumer not in CONSUMERS:
            raise ValueError(
                f"no durable consumer {consumer!r} in the topology (one of {', '.join(CONSUMERS)})"
            )
        self.broker = broker
        self.consumer = consumer
        self.reads = CONSUMERS[consumer]
        self.handler = handler
        self.policy = policy or RetryPolicy()
        self.batch = batch
        self.fetch_timeout = fetch_timeout

    async def run(self, stop: StopSignal) -> None:
        """Consume until `stop` is set (checked at least every `fetch_timeout` seconds)."""
        log.info("consumer %s started", self.consumer)
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("consumer %s: fetching failed; retrying", self.consumer)
                await asyncio.sleep(1.0)
        log.info("consumer %s stopped", self.consumer)

    async def run_once(self) -> int:
        """Take what has arrived (waiting at most `fetch_timeout` for something) and settle every delivery;
        returns how many deliveries there were."""
        deliveries = await self.broker.fetch(self.consumer, self.batch, self.fetch_timeout)
        await self._settle_all(deliveries)
        return len(deliveries)

    async def _settle_all(self, deliveries: Sequence[Delivery]) -> None:
        parsed = [(d, event) for d in deliveries if (event := await self._admit(d)) is not None]
        if not parsed:
            return
        BATCH_SIZE.labels(self.consumer).observe(len(parsed))
        with HANDLING.labels(self.consumer).time():
            outcomes = await self._handle([event for _, event in parsed])
            for (delivery, event), outcome in zip(parsed, outcomes, strict=True):
                if outcome is None:
                    await delivery.ack()
                    MESSAGES.labels(self.consumer, "acked").inc()
                else:
                    await self._failed(delivery, event, outcome)

    async def _admit(self, delivery: Delivery) -> Envelope[AnyEvent] | None:
        """The delivery's event, or None once it is dead-lettered: not an event, or not one whose producer
        may publish it on this subject."""
        try:
            event = parse(delivery.data)
        except MalformedEvent as exc:
            await self._dead_letter(delivery, f"malformed event: {exc}")
            return None
        refusal = self.reads.refusal(delivery.subject, event.type)
        if refusal is None:
            return event
        log.error("consumer %s: %s %s dead-lettered: %s", self.consumer, event.type, event.id, refusal)
        await self._dead_letter(delivery, refusal)
        return None

    async def _handle(self, events: Sequence[Envelope[AnyEvent]]) -> list[Outcome]:
        try:
            outcomes = list(await self.handler(events))
        except Exception as exc:
            if len(events) == 1:
                return [exc]
            log.info("consumer %s: a batch of %d failed (%s); one by one", self.consumer, len(events), exc)
            return [(await self._handle([event]))[0] for event in events]
        if len(outcomes) != len(events):
            raise RuntimeError(f"handler answered {len(outcomes)} outcomes for {len(events)} events")
        return outcomes

    async def _failed(self, delivery: Delivery, event: Envelope[AnyEvent], exc: Exception) -> None:
        attempt = delivery.attempt
        if attempt >= self.policy.max_deliver:
            log.error(
                "%s %s failed %d times; dead-lettered: %s", event.type, event.id, attempt, describe(exc)
            )
            await self._dead_letter(delivery, describe(exc))
            return
        delay = self.policy.delay_after(attempt, exc)
        log.warning(
            "%s %s failed (delivery %d); retry in %.1fs: %s",
            event.type,
            event.id,
            attempt,
            delay,
            describe(exc),
        )
        await delivery.nak(delay)
        MESSAGES.labels(self.consumer, "retried").inc()

    async def _dead_letter(self, delivery: Delivery, error: str) -> None:
        try:
            await self.broker.dead_letter(delivery, self.consumer, error)
        except Exception:
            # Left unsettled: the broker delivers it again after its ack wait and it comes back here.
            log.exception("consumer %s: dead-lettering message %s failed", self.consumer, delivery.msg_id)
            return
        MESSAGES.labels(self.consumer, "dead_lettered").inc()
