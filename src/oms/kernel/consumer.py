"""Running a service's durable consumer: fetch batches, parse each event, call the service's handler,
settle the delivery. A handler that fails is retried with a growing delay; after `max_deliver` deliveries
the message goes to the dead-letter queue, and so does a message that is not a valid event at all.

The handler opens its own database transaction and calls `inbox.first_delivery` in it: delivery is
at-least-once, and messages of different orders may be handled concurrently and in any order.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from prometheus_client import Counter

from oms.kernel.broker import MAX_DELIVER, Broker, Delivery
from oms.kernel.events import Envelope, MalformedEvent, parse

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]

MESSAGES: Final = Counter(
    "oms_consumer_messages", "Deliveries settled by a consumer, by outcome", ["consumer", "outcome"]
)


class StopSignal(Protocol):
    """Anything with `is_set()`: a threading.Event, an asyncio.Event, a multiprocessing Event."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_deliver: int = MAX_DELIVER
    nak_delays: tuple[float, ...] = (1.0, 5.0, 15.0, 30.0)  # seconds before the 2nd, 3rd, ... delivery

    def delay_after(self, attempt: int) -> float:
        return self.nak_delays[min(attempt, len(self.nak_delays)) - 1]


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class ConsumerRunner:
    """Feeds the events of durable consumer `consumer` to `handler`, `concurrency` orders at a time
    (the events of one order always one after another, in stream order)."""

    def __init__(
        self,
        broker: Broker,
        consumer: str,
        handler: Handler,
        *,
        policy: RetryPolicy | None = None,
        batch: int = 100,
        concurrency: int = 1,
        fetch_timeout: float = 1.0,
    ) -> None:
        self.broker = broker
        self.consumer = consumer
        self.handler = handler
        self.policy = policy or RetryPolicy()
        self.batch = batch
        self.concurrency = concurrency
        self.fetch_timeout = fetch_timeout

    async def run(self, stop: StopSignal) -> None:
        """Consume until `stop` is set (checked at least every `fetch_timeout` seconds)."""
        log.info("consumer %s started", self.consumer)
        while not stop.is_set():
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("consumer %s: fetching failed; retrying", self.consumer)
                await asyncio.sleep(1.0)
        log.info("consumer %s stopped", self.consumer)

    async def run_once(self) -> int:
        """Fetch one batch (waiting at most `fetch_timeout`) and settle every delivery; returns how many."""
        deliveries = await self.broker.fetch(self.consumer, self.batch, self.fetch_timeout)
        await self._settle_all(deliveries)
        return len(deliveries)

    async def _settle_all(self, deliveries: Sequence[Delivery]) -> None:
        by_order: dict[uuid.UUID, list[tuple[Delivery, Envelope]]] = defaultdict(list)
        for delivery in deliveries:
            try:
                event = parse(delivery.data)
            except MalformedEvent as exc:
                await self._dead_letter(delivery, f"malformed event: {exc}")
                continue
            by_order[event.order_id].append((delivery, event))
        slots = asyncio.Semaphore(self.concurrency)

        async def settle_order(items: list[tuple[Delivery, Envelope]]) -> None:
            async with slots:
                for delivery, event in items:
                    await self._settle(delivery, event)

        await asyncio.gather(*(settle_order(items) for items in by_order.values()))

    async def _settle(self, delivery: Delivery, event: Envelope) -> None:
        try:
            await self.handler(event)
        except Exception as exc:
            await self._failed(delivery, event, exc)
        else:
            await delivery.ack()
            MESSAGES.labels(self.consumer, "acked").inc()

    async def _failed(self, delivery: Delivery, event: Envelope, exc: Exception) -> None:
        attempt = delivery.attempt
        if attempt >= self.policy.max_deliver:
            log.error(
                "%s %s failed %d times; dead-lettered: %s", event.type, event.id, attempt, describe(exc)
            )
            await self._dead_letter(delivery, describe(exc))
            return
        delay = self.policy.delay_after(attempt)
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


async def run_consumer(broker: Broker, consumer: str, handler: Handler, stop: StopSignal) -> None:
    """`ConsumerRunner(broker, consumer, handler).run(stop)` with the default policy."""
    await ConsumerRunner(broker, consumer, handler).run(stop)
