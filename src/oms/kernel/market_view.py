"""The market as read from the broker: `MarketView` follows stream OMS_MARKET and keeps a `MarketBoard` of
each symbol's instrument and latest quote, so that any service has live `MarketData`.

It reads through an ephemeral consumer that starts from the last message of every subject (the stream keeps
only that one), delivered to this connection's own inbox without acknowledgements. Whenever the flow may have
lost something — a gap in the consumer's sequence, heartbeats missing (the broker restarted or the consumer
was dropped), the connection re-established — it starts a new consumer from the last values again: the board
ignores a quote it already has (by sequence), and an instrument is its latest state, so reading them twice
is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from oms.kernel.market import (
    INSTRUMENT_SUBJECT_PREFIX,
    MARKET_STREAM,
    MARKET_SUBJECTS,
    QUOTE_SUBJECT_PREFIX,
    Instrument,
    MarketBoard,
    Quote,
    QuoteListener,
)

log = logging.getLogger(__name__)

HEARTBEAT: Final = 1.0  # seconds between the broker's heartbeats while nothing else arrives
MISSED_HEARTBEATS: Final = 3  # then the consumer is taken for lost and made again
# The broker forgets a consumer nobody has read for this long (this process died without deleting it).
INACTIVE_THRESHOLD: Final = 30.0
_STATUS, _LAST_CONSUMER = "Status", "Nats-Last-Consumer"


def read_market_message(subject: str, data: bytes) -> Quote | Instrument | None:
    """The quote or instrument a message of OMS_MARKET carries (None: not market data, or malformed)."""
    try:
        if subject.startswith(QUOTE_SUBJECT_PREFIX):
            quote = Quote.model_validate_json(data)
            return quote if subject == f"{QUOTE_SUBJECT_PREFIX}{quote.symbol}" else None
        if subject.startswith(INSTRUMENT_SUBJECT_PREFIX):
            instrument = Instrument.model_validate_json(data)
            return instrument if subject == f"{INSTRUMENT_SUBJECT_PREFIX}{instrument.symbol}" else None
    except ValidationError as exc:
        log.warning("ignored a malformed message on %s: %s", subject, exc.errors()[:1])
    return None


class _Reading:
    """One consumer's flow: which consumer sequence came last, when the broker last spoke, whether it was
    taken for lost."""

    def __init__(self) -> None:
        self.last_delivered = 0
        self.heard_at = time.monotonic()
        self.lost = False


class MarketView:
    """`MarketData` from the broker, kept up to date by `run` on a connection (or `follow_market`). It can be
    made before there is a connection: a service hands it to what needs market data, then runs it on its
    broker connection once that exists."""

    def __init__(self, board: MarketBoard | None = None, *, heartbeat: float = HEARTBEAT) -> None:
        self.board = board or MarketBoard()
        self._heartbeat = heartbeat
        self._ready = asyncio.Event()
        self._reading: _Reading | None = None
        self.restarts = 0  # consumers made again after the first (for tests and operators)

    # -- MarketData --------------------------------------------------------------------------------
    def instrument(self, symbol: str) -> Instrument | None:
        return self.board.instrument(symbol)

    def quote(self, symbol: str) -> Quote | None:
        return self.board.quote(symbol)

    def listen(self, listener: QuoteListener) -> None:
        self.board.listen(listener)

    # -- following the stream ---------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once the last values the stream held when reading began have all been read, and they list
        some instrument (an empty stream is a market service that has not published yet)."""
        return self._ready.is_set() and not self.board.lists_nothing()

    async def wait_ready(self, within: float | None = None) -> None:
        """Until the stream's last values are on the board (TimeoutError after `within` seconds)."""
        await asyncio.wait_for(self._ready.wait(), within)

    async def run(self, nc: NatsClient, stop: asyncio.Event) -> None:
        """Read the stream on `nc` until `stop` is set; a new consumer whenever the flow may have a gap."""
        while not stop.is_set():
            try:
                await self._read_until_lost(nc, stop)
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                log.warning("reading %s: %s; trying again", MARKET_STREAM, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._heartbeat)
            if not stop.is_set():
                self.restarts += 1

    async def _read_until_lost(self, nc: NatsClient, stop: asyncio.Event) -> None:
        # Deliveries may come before the answer to the consumer's creation: the reading starts first.
        self._reading = reading = _Reading()
        subscription = await nc.subscribe(nc.new_inbox(), cb=self._receive)
        try:
            info = await nc.jetstream(timeout=5).add_consumer(
                MARKET_STREAM, self._consumer(subscription.subject)
            )
            if not info.num_pending and not (info.delivered and info.delivered.consumer_seq):
                self._ready.set()  # the stream is empty: there is nothing to wait for
            while not stop.is_set() and not self._lost(reading, nc):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._heartbeat / 2)
        finally:
            self._reading = None
            await _quietly_unsubscribe(subscription)

    def _consumer(self, deliver_subject: str) -> ConsumerConfig:
        return ConsumerConfig(
            name=f"view-{uuid.uuid4().hex[:12]}",
            deliver_subject=deliver_subject,
            filter_subject=MARKET_SUBJECTS,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            idle_heartbeat=self._heartbeat,
            inactive_threshold=INACTIVE_THRESHOLD,
            mem_storage=True,
            num_replicas=1,
        )

    def _lost(self, reading: _Reading, nc: NatsClient) -> bool:
        silent = time.monotonic() - reading.heard_at > self._heartbeat * MISSED_HEARTBEATS
        if silent and not reading.lost:
            log.warning("no heartbeat from the %s consumer; reading the last values again", MARKET_STREAM)
        return reading.lost or silent or not nc.is_connected

    async def _receive(self, msg: Msg) -> None:
        reading = self._reading
        if reading is None or reading.lost:
            return
        reading.heard_at = time.monotonic()
        headers = msg.headers or {}
        if headers.get(_STATUS) == "100":  # a heartbeat: says which consumer sequence was sent last
            last = headers.get(_LAST_CONSUMER)
            if last is not None and int(last) != reading.last_delivered:
                self._gap(reading, f"the broker sent up to {last}, {reading.last_delivered} arrived")
            return
        metadata = msg.metadata
        if metadata.sequence.consumer != reading.last_delivered + 1:
            self._gap(reading, f"message {metadata.sequence.consumer} after {reading.last_delivered}")
            return
        reading.last_delivered = metadata.sequence.consumer
        await self._apply(read_market_message(msg.subject, msg.data))
        if metadata.num_pending == 0:  # the last of the last values (and of anything newer so far)
            self._ready.set()

    def _gap(self, reading: _Reading, what: str) -> None:
        log.warning("gap in %s (%s); reading the last values again", MARKET_STREAM, what)
        reading.lost = True

    async def _apply(self, item: Quote | Instrument | None) -> None:
        if isinstance(item, Instrument):
            self.board.list_instrument(item)
        elif isinstance(item, Quote):
            await self.board.publish(item)


async def _quietly_unsubscribe(subscription: Subscription) -> None:
    with contextlib.suppress(nats.errors.Error):
        await subscription.unsubscribe()


@asynccontextmanager
async def follow_market(nc: NatsClient, view: MarketView | None = None) -> AsyncIterator[MarketView]:
    """`view` (or a new MarketView) read on connection `nc` in the background for the duration of the
    block."""
    view = view or MarketView()
    stop = asyncio.Event()
    task = asyncio.create_task(view.run(nc, stop), name="market-view")
    try:
        yield view
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
