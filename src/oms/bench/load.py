"""The load: funded customers sending a mix of BUY and SELL orders over HTTP, either at a fixed rate (open
loop: latency counts from the moment a request was due, so a slow system cannot hide its queue) or closed
loop (`concurrency` clients, each sending its next order as soon as the last one was answered).

The orders are marketable: listed symbols, LIMIT prices beyond the latest quote (a BUY above the ask, a SELL
below the bid; on the tick grid, inside the band, in whole lots) and a share of MARKET orders, so each one
executes as soon as its funds are reserved, in `market` mode as in `immediate`."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from oms.bench.client import Client, Principal
from oms.bench.http import TransportError
from oms.bench.market import Market
from oms.kernel.money import Side

QUOTES_EVERY = 1.0  # seconds between reads of the latest quotes while a phase runs
CASH_PER_CUSTOMER = Decimal(100_000_000)
STOCK_PER_CUSTOMER = Decimal(1_000_000)
# Fixed-rate mode: at most this many requests outstanding (one per connection of the client; more would
# only queue inside the client, which costs the generator CPU the system needs). Latency still counts from
# when a request was due, so a request that waits for a free connection is measured as late as it is.
MAX_IN_FLIGHT = 64


@dataclass(frozen=True)
class LoadConfig:
    duration: float
    rate: float | None = None  # orders/s; None: closed loop
    concurrency: int = 32
    list_rate: float = 5.0  # list-orders requests/s alongside (a customer's first page)
    reject_ratio: float = 0.0  # share of orders sent to be refused (SELL of a symbol never held)
    market_ratio: float = 0.1  # share of MARKET orders (the others are marketable LIMIT orders)

    @property
    def name(self) -> str:
        return f"rate {self.rate:g}/s" if self.rate else f"closed loop x{self.concurrency}"


@dataclass
class PhaseResult:
    """What the client saw during one load phase (wall-clock times, latencies in seconds)."""

    config: LoadConfig
    started: float = 0.0
    ended: float = 0.0
    order_ids: list[str] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)  # wall clock, when each accepted create was due
    create_latency: list[float] = field(default_factory=list)
    list_latency: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    waited_for_capacity: int = 0  # fixed rate: requests due while MAX_IN_FLIGHT were outstanding

    @property
    def created(self) -> int:
        return len(self.order_ids)


@dataclass
class Workload:
    """What the orders name: the market (instruments, latest quotes), the symbols the customers hold, and a
    listed symbol none of them holds (a SELL of it is refused: funds.rejected → CANCELED)."""

    market: Market
    symbols: list[str]
    unheld: str | None = None

    @classmethod
    def of(cls, market: Market, count: int, leave_out: set[str] | None = None) -> Workload:
        picked = market.pick(count + 1, leave_out=leave_out)
        if len(picked) < 2:
            raise RuntimeError("the market lists fewer than two open symbols with quotes to order")
        return cls(market, picked[:-1], picked[-1])

    async def follow_quotes(self, client: Client, admin: Principal, until: float) -> None:
        """Read the latest quotes of the workload's symbols every QUOTES_EVERY s until `until`."""
        wanted = [*self.symbols, *([self.unheld] if self.unheld else [])]
        while time.perf_counter() < until:
            await asyncio.sleep(QUOTES_EVERY)
            try:
                self.market.update(await client.quotes(admin, wanted))
            except TransportError:
                continue


async def fund_customers(
    client: Client, admin: Principal, customers: list[Principal], symbols: list[str]
) -> None:
    """Give every customer plenty of TRY and of each of `symbols` (admin deposits)."""
    slots = asyncio.Semaphore(16)

    async def fund(customer: Principal, asset: str, amount: Decimal) -> None:
        async with slots:
            response = await client.deposit(admin, customer.id, asset, amount)
            response.raise_for_status()

    await asyncio.gather(
        *(fund(c, "TRY", CASH_PER_CUSTOMER) for c in customers),
        *(fund(c, s, STOCK_PER_CUSTOMER) for c in customers for s in symbols),
    )


class Load:
    """Runs one phase of orders against the system."""

    def __init__(
        self,
        client: Client,
        customers: list[Principal],
        config: LoadConfig,
        workload: Workload,
        *,
        admin: Principal | None = None,
        seed: int | None = None,
    ) -> None:
        self.client = client
        self.customers = customers
        self.config = config
        self.workload = workload
        self.admin = admin  # reads the quotes while the phase runs (None: the prices known at the start)
        self.random = random.Random(seed)  # noqa: S311 - a load, not secrets
        self.result = PhaseResult(config)

    def next_order(self) -> tuple[Principal, str, str, Decimal, Decimal | None]:
        """Who sends the next order: side, symbol, size and limit price (None: a MARKET order)."""
        customer, market = self.random.choice(self.customers), self.workload.market
        unheld = self.workload.unheld
        if unheld and self.random.random() < self.config.reject_ratio:
            return customer, "SELL", unheld, market.lot(unheld), market.marketable_limit(unheld, Side.SELL)
        side = self.random.choice((Side.BUY, Side.SELL))
        symbol = self.random.choice(self.workload.symbols)
        size = market.lot(symbol) * self.random.randint(1, 10)
        if self.random.random() < self.config.market_ratio:
            return customer, side.value, symbol, size, None
        return customer, side.value, symbol, size, market.marketable_limit(symbol, side)

    async def _create(self, due: float) -> None:
        customer, side, asset, size, price = self.next_order()
        due_wall = time.time() - (time.perf_counter() - due)
        try:
            response = await self.client.create_order(customer, customer.id, side, asset, size, price)
        except TransportError as exc:
            self.result.errors[type(exc).__name__] += 1
            return
        latency = time.perf_counter() - due
        if response.status_code != 200:
            self.result.errors[f"HTTP {response.status_code}"] += 1
            return
        self.result.order_ids.append(response.json()["id"])
        self.result.sent_at.append(due_wall)
        self.result.create_latency.append(latency)

    async def _closed_loop(self, deadline: float) -> None:
        async def client_loop() -> None:
            while time.perf_counter() < deadline:
                await self._create(time.perf_counter())

        await asyncio.gather(*(client_loop() for _ in range(self.config.concurrency)))

    async def _fixed_rate(self, deadline: float, rate: float) -> None:
        start, sent = time.perf_counter(), 0
        pending: set[asyncio.Task[None]] = set()
        while (due := start + sent / rate) < deadline:
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            while len(pending) >= MAX_IN_FLIGHT:
                self.result.waited_for_capacity += 1
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(self._create(due))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        if pending:
            await asyncio.wait(pending)

    async def _list_orders(self, deadline: float) -> None:
        """A customer's first page of orders, `list_rate` times a second, while the orders flow."""
        if self.config.list_rate <= 0:
            return
        interval = 1 / self.config.list_rate
        while time.perf_counter() < deadline:
            customer = self.random.choice(self.customers)
            started = time.perf_counter()
            try:
                response = await self.client.list_orders(customer)
                if response.status_code == 200:
                    self.result.list_latency.append(time.perf_counter() - started)
                else:
                    self.result.errors[f"list HTTP {response.status_code}"] += 1
            except TransportError as exc:
                self.result.errors[f"list {type(exc).__name__}"] += 1
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))

    async def run(self, on_tick: Callable[[PhaseResult, float], None] | None = None) -> PhaseResult:
        """Send orders for `duration` seconds; `on_tick(result, elapsed)` is called four times a second."""
        self.result.started = time.time()
        begin = time.perf_counter()
        deadline = begin + self.config.duration
        rate = self.config.rate
        orders = self._fixed_rate(deadline, rate) if rate else self._closed_loop(deadline)
        quotes = self.workload.follow_quotes(self.client, self.admin, deadline) if self.admin else None
        work = asyncio.gather(orders, self._list_orders(deadline), *([quotes] if quotes else []))
        while not work.done():
            await asyncio.wait([work], timeout=0.25)
            if on_tick is not None:
                on_tick(self.result, time.perf_counter() - begin)
        await work
        self.result.ended = time.time()
        return self.result
