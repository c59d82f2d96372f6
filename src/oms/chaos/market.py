"""The market as the chaos suite sees it: the instruments and quotes its orders are priced from, and the
record of every quote the market published, which the checks compare executions with.

The market service keeps no quote history (OMS_MARKET keeps each symbol's last quote only, docs/decisions/
013), so the run records one itself before the first order: a mirror stream of the quote subjects, on the
broker's file storage, that keeps every quote. A mirror copies what OMS_MARKET stores as it stores it, and
goes on after a NATS crash from where it was; a quote replaced in OMS_MARKET before the mirror copied it is
lost to the mirror. So the run also listens to the quotes as they are published, on each NATS server of a
cluster (`QuoteTap`): while one server is down the others hear them. The record is the union of both; a
quote neither has is seen as a gap in the symbol's sequence, and an execution the record cannot confirm
there is counted as unverifiable, not as a violation.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlencode

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig, StreamSource

from oms.bench.client import Client, Principal, exact
from oms.bench.http import TransportError
from oms.kernel.market import MARKET_STREAM, QUOTE_SUBJECT_PREFIX, Instrument, Quote
from oms.kernel.money import Side
from oms.kernel.nats_access import NatsAccess, connect_nats

QUOTE_RECORD: Final = "OMS_CHAOS_QUOTES"
QUOTE_SUBJECTS: Final = f"{QUOTE_SUBJECT_PREFIX}>"


async def record_quotes(access: NatsAccess, replicas: int = 1) -> None:
    """Start recording every quote (the operator's identity creates the mirror; on a cluster, `replicas`
    copies of it, as of the streams it mirrors: the record survives the NATS server crashes)."""
    nc = await connect_nats(access, once=True)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=QUOTE_RECORD,
                mirror=StreamSource(name=MARKET_STREAM, filter_subject=QUOTE_SUBJECTS),
                storage=StorageType.FILE,
                max_age=86_400,
                num_replicas=replicas,
            )
        )
        for _ in range(200):  # the mirror copies from when it is running: wait for it, caught up
            mirror = (await js.stream_info(QUOTE_RECORD)).mirror
            if mirror is not None and mirror.active is not None and mirror.active >= 0 and not mirror.lag:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the quote record {QUOTE_RECORD} did not start mirroring {MARKET_STREAM}")
    finally:
        await nc.close()


async def recorded_quotes(
    access: NatsAccess, settle: float = 10.0, heard: Sequence[Quote] = ()
) -> QuoteHistory:
    """Every quote recorded, once the mirror has caught up with OMS_MARKET (or `settle` seconds passed), with
    those `heard` by a `QuoteTap`."""
    nc = await connect_nats(access, once=True)
    try:
        js = nc.jetstream(timeout=10)
        deadline = asyncio.get_running_loop().time() + settle
        while asyncio.get_running_loop().time() < deadline:
            info = await js.stream_info(QUOTE_RECORD)
            if info.mirror is not None and not info.mirror.lag:
                break
            await asyncio.sleep(0.5)
        last = (await js.stream_info(QUOTE_RECORD)).state.last_seq  # the market goes on quoting: up to here
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, filter_subject=QUOTE_SUBJECTS)
        reader = await js.pull_subscribe(QUOTE_SUBJECTS, stream=QUOTE_RECORD, config=config)
        quotes, read = [], 0
        while read < last:
            try:
                batch = await reader.fetch(1000, timeout=5)
            except (nats.errors.TimeoutError, TimeoutError):
                break  # nothing more (a record that lost its tail): what was read is the record
            quotes += [Quote.model_validate_json(m.data) for m in batch]
            read = batch[-1].metadata.sequence.stream
        await reader.unsubscribe()
        return QuoteHistory([*quotes, *heard])
    finally:
        await nc.close()


class QuoteTap:
    """The quotes as the feed publishes them, heard on every server of `access` (one connection each): what
    a server that is down misses, the others hear."""

    def __init__(self) -> None:
        self.heard: set[bytes] = set()  # the same quote heard twice is one
        self.connections: list[Any] = []

    async def start(self, access: NatsAccess) -> None:
        async def hear(msg: Any) -> None:
            self.heard.add(msg.data)

        for server in access.servers:
            nc = await connect_nats(access.with_servers(server), error_cb=_quiet)
            await nc.subscribe(QUOTE_SUBJECTS, cb=hear)
            self.connections.append(nc)

    async def stop(self) -> None:
        connections, self.connections = self.connections, []
        for nc in connections:
            with contextlib.suppress(nats.errors.Error):
                await nc.close()

    def quotes(self) -> list[Quote]:
        return [Quote.model_validate_json(data) for data in self.heard]


async def _quiet(_: Exception) -> None:
    """A server down on purpose: its tap waits for it, another hears the quotes meanwhile."""


@dataclass
class QuoteHistory:
    """The quotes the market published, by symbol: what an execution may have been at."""

    quotes: list[Quote]
    _first_at: dict[tuple[str, Side, Decimal], datetime] = field(default_factory=dict, repr=False)
    _by_symbol: dict[str, list[Quote]] = field(default_factory=lambda: defaultdict(list), repr=False)

    def __post_init__(self) -> None:
        self.quotes = list({(q.symbol, q.sequence, q.bid, q.ask): q for q in self.quotes}.values())
        for quote in sorted(self.quotes, key=lambda q: (q.symbol, q.sequence)):
            self._by_symbol[quote.symbol].append(quote)
            for side in Side:
                key = (quote.symbol, side, quote.price_for(side))
                if key not in self._first_at or quote.time < self._first_at[key]:
                    self._first_at[key] = quote.time

    def quoted(self, symbol: str, side: Side, price: Decimal, by: datetime) -> bool:
        """True when the market quoted `price` on `side`'s execution side (a BUY's ask, a SELL's bid) for
        `symbol` at or before `by`."""
        first = self._first_at.get((symbol, side, price))
        return first is not None and first <= by

    def ask_above(self, symbol: str, price: Decimal, by: datetime) -> bool:
        """True when some quote of `symbol` at or before `by` asked more than `price`."""
        return any(q.ask > price and q.time <= by for q in self._by_symbol.get(symbol, ()))

    def gaps(self, symbol: str) -> int:
        """Quotes of `symbol` missing from the record between its first and last recorded."""
        sequences = {q.sequence for q in self._by_symbol.get(symbol, ())}
        return max(sequences) - min(sequences) + 1 - len(sequences) if sequences else 0

    def symbols(self) -> list[str]:
        return sorted(self._by_symbol)


# --- pricing the workload's orders ---------------------------------------------------------------------


def limit_price(instrument: Instrument, quote: Quote, side: Side, ticks: int, *, marketable: bool) -> Decimal:
    """A limit `ticks` ticks through the quote (marketable: a BUY above the ask, a SELL below the bid) or
    `ticks` away from it on the resting side (a BUY below the bid, a SELL above the ask), inside the band."""
    tick = instrument.tick_size
    if marketable:
        price = quote.ask + ticks * tick if side is Side.BUY else quote.bid - ticks * tick
    else:
        price = quote.bid - ticks * tick if side is Side.BUY else quote.ask + ticks * tick
    low, high = instrument.band(quote.last)
    return min(max(price, low), high)


@dataclass
class MarketWatch:
    """The instruments the workload trades and their latest quotes, refreshed from the market service as
    the run goes (kept as they were while the market service is down)."""

    client: Client
    by: Principal
    instruments: dict[str, Instrument] = field(default_factory=dict)
    quotes: dict[str, Quote] = field(default_factory=dict)
    refreshes: int = 0
    failures: int = 0

    async def choose(self, count: int, rng: random.Random, low: Decimal, high: Decimal) -> list[str]:
        """`count` OPEN symbols whose reference price is between `low` and `high` TRY, chosen by `rng`."""
        listed = await self._get("/api/v1/instruments", {"status": "OPEN"})
        fitting = sorted(
            (Instrument.model_validate(i) for i in listed["instruments"]),
            key=lambda i: i.symbol,
        )
        fitting = [i for i in fitting if low <= i.reference_price <= high]
        chosen = rng.sample(fitting, min(count, len(fitting)))
        self.instruments = {i.symbol: i for i in chosen}
        for _ in range(120):  # the feed quotes each symbol within seconds of its start
            await self.refresh()
            if set(self.quotes) >= set(self.instruments):
                return list(self.instruments)
            await asyncio.sleep(0.5)
        raise RuntimeError(f"no quote of {sorted(set(self.instruments) - set(self.quotes))} within a minute")

    async def refresh(self) -> None:
        symbols = urlencode([("symbol", s) for s in sorted(self.instruments)])
        answer = await self._get(f"/api/v1/quotes?{symbols}", {})
        for quote in answer["quotes"]:
            self.quotes[quote["symbol"]] = Quote.model_validate(_wire(quote))
        self.refreshes += 1

    async def run(self, stop: asyncio.Event, every: float = 1.0) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except (TransportError, OSError, RuntimeError):
                self.failures += 1  # the market service is down (killed): keep the quotes we have
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def _get(self, path: str, params: dict[str, Any]) -> Any:
        response = await self.client.request(
            "GET", self.client.url("market", path), params=params or None, headers=self.by.headers
        )
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")
        return exact(response)


def _wire(quote: dict[str, Any]) -> dict[str, Any]:
    """A quote as the API answers it (exact numbers) in the form `Quote` reads: decimals as strings."""
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in quote.items()}


def closes_in(seconds: float, now: datetime) -> str:
    """An OMS_MARKET_CLOSE `seconds` from `now` (UTC, to the second): the close falls inside the run."""
    return f"{now.astimezone(UTC) + timedelta(seconds=seconds):%H:%M:%S} UTC"
