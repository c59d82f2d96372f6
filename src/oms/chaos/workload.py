"""The chaos workload: orders, cancels, deposits and withdrawals across many customers, every request
recorded client-side with its final answer. Some deposits are customers' requests and some withdrawals are
above the approval threshold: each is then approved or rejected by an admin — a withdrawal's approval by
another admin than the one who asked, who sometimes tries first and must be refused (four eyes).

Orders are for listed instruments, priced from the market's latest quotes (`MarketWatch`, refreshed as the
run goes): LIMIT orders that the quote crosses and LIMIT orders that rest (GTC and DAY), MARKET BUYs and
SELLs, IOC orders that can execute at once and IOC orders that cannot; two of the symbols are deposited to
every customer, one never is (a SELL of it is refused by the account service, a BUY creates it).

A request that fails without an answer (connection refused or reset, timeout, 5xx: a service or its database
is down) is retried with the same `Idempotency-Key`, so a create, deposit, withdrawal or decision whose first
attempt did commit is answered from the stored answer and happens once. A cancel has no key: a retried cancel
that finds the order CANCELED is recorded as ambiguous (our first attempt, or the system's own refusal).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from oms.bench.client import Client, Principal
from oms.bench.http import Response, TransportError
from oms.chaos.market import MarketWatch, limit_price
from oms.kernel.money import CASH, OrderType, Side, TimeInForce

IBAN = "TR33 0006 1005 1978 6457 8413 26"
INITIAL_STOCK = Decimal(100)
LIMIT, MARKET = OrderType.LIMIT, OrderType.MARKET
GTC, DAY, IOC = TimeInForce.GTC, TimeInForce.DAY, TimeInForce.IOC
# The kinds of order the workload sends: type, time in force, whether its limit crosses the quote (None: a
# MARKET order), and how often.
ORDER_KINDS: tuple[tuple[OrderType, TimeInForce, bool | None, int], ...] = (
    (LIMIT, GTC, True, 28),
    (LIMIT, GTC, False, 12),
    (LIMIT, DAY, False, 10),
    (LIMIT, DAY, True, 6),
    (MARKET, GTC, None, 14),
    (MARKET, IOC, None, 4),
    (LIMIT, IOC, True, 14),
    (LIMIT, IOC, False, 12),
)
RETRYABLE_STATUS = {500, 502, 503, 504, 429}


@dataclass
class Op:
    """One logical request and what finally became of it."""

    kind: str  # order | cancel | deposit | withdraw | deposit_request | decision | four_eyes
    customer: str
    body: dict[str, Any]
    key: str | None = None
    outcome: str = "unresolved"  # accepted | refused | ambiguous | unresolved
    status: int | None = None
    answer: Any = None
    attempts: int = 0
    sent_at: float | None = None  # time.time() of the first attempt
    answered_at: float | None = None  # … and of the definitive answer

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"


@dataclass
class Ledger:
    """Everything the workload asked for, by kind."""

    orders: list[Op] = field(default_factory=list)
    cancels: list[Op] = field(default_factory=list)
    sweeps: list[Op] = field(default_factory=list)  # cancels of the orders still resting at the end
    deposits: list[Op] = field(default_factory=list)  # an admin's, credited at once
    withdrawals: list[Op] = field(default_factory=list)  # paid at once, or REQUESTED (large)
    deposit_requests: list[Op] = field(default_factory=list)  # a customer's, waiting for an admin
    decisions: list[Op] = field(default_factory=list)  # approve or reject of a request
    four_eyes: list[Op] = field(default_factory=list)  # the asking admin's own approval: must be refused
    http_errors: Counter[str] = field(default_factory=Counter)
    retries: int = 0

    def all(self) -> list[Op]:
        return [
            *self.orders,
            *self.cancels,
            *self.sweeps,
            *self.deposits,
            *self.withdrawals,
            *self.deposit_requests,
            *self.decisions,
            *self.four_eyes,
        ]

    def decided(self) -> dict[str, Op]:
        """The decision on each request, by request id."""
        return {op.body["id"]: op for op in self.decisions}


def kurus(rng: random.Random, low: int, high: int) -> Decimal:
    """A random TRY amount between `low` and `high` lira, to the kuruş."""
    return Decimal(rng.randint(low * 100, high * 100)) / 100


@dataclass(frozen=True)
class Cast:
    """Who acts: the admin who sends everything, a second admin (four eyes), the customers by id, and those of
    them who can sign in and ask for deposits themselves."""

    admin: Principal
    second_admin: Principal
    customers: list[str]
    requesters: list[Principal]


class Workload:
    def __init__(
        self,
        client: Client,
        cast: Cast,
        rng: random.Random,
        threshold: Decimal,
        market: MarketWatch,
        give_up: float = 300,
    ) -> None:
        self.client = client
        self.market = market
        symbols = list(market.instruments)
        self.held = symbols[:2]  # deposited to every customer
        self.unheld = symbols[-1]  # never deposited: a SELL of it is refused; a BUY creates it
        self.admin = cast.admin
        self.cast = cast
        self.customers = cast.customers
        self.rng = rng
        self.threshold = threshold  # the system's OMS_WITHDRAWAL_APPROVAL_THRESHOLD
        self.give_up = give_up
        self.book = Ledger()
        self.recent: dict[str, list[str]] = {c: [] for c in cast.customers}  # accepted order ids, newest last
        self.finished_at: float | None = None  # time.time() when the last request of `run` was answered

    async def send(self, op: Op, request: Callable[[], Awaitable[Response]]) -> Op:
        """Send until a definitive answer (2xx or 4xx) or `give_up` seconds; retries are safe (see above)."""
        deadline = time.monotonic() + self.give_up
        delay = 0.1
        lost_an_answer = False
        op.sent_at = time.time()
        while True:
            op.attempts += 1
            try:
                response = await request()
            except TransportError as exc:
                self.book.http_errors[type(exc).__name__] += 1
                lost_an_answer = True
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    op.status = response.status_code
                    op.answered_at = time.time()
                    op.answer = response.json() if response.content else None
                    op.outcome = "accepted" if response.status_code < 300 else "refused"
                    if op.kind == "cancel" and op.status == 409 and lost_an_answer:
                        op.outcome = "ambiguous"
                    return op
                self.book.http_errors[f"HTTP {response.status_code}"] += 1
                lost_an_answer = True
            if time.monotonic() > deadline:
                return op
            self.book.retries += 1
            await asyncio.sleep(delay * (0.5 + self.rng.random()))
            delay = min(delay * 2, 2.0)

    # -- operations ------------------------------------------------------------------------------
    async def deposit(self, customer: str, asset: str, amount: Decimal) -> Op:
        op = Op("deposit", customer, {"asset": asset, "amount": amount}, key=str(uuid.uuid4()))
        self.book.deposits.append(op)
        return await self.send(
            op, lambda: self.client.deposit(self.admin, customer, asset, amount, key=op.key)
        )

    async def withdraw(self, customer: str, large: bool = False) -> Op:
        """Up to the threshold: paid at once. Above it (`large`): held, then decided."""
        amount = (
            self.threshold + kurus(self.rng, 0, 1000) + Decimal("0.01") if large else kurus(self.rng, 1, 300)
        )
        op = Op("withdraw", customer, {"amount": amount}, key=str(uuid.uuid4()))
        self.book.withdrawals.append(op)
        await self.send(op, lambda: self.client.withdraw(self.admin, customer, amount, IBAN, key=op.key))
        if op.accepted and op.answer["status"] == "REQUESTED":
            if self.rng.random() < 0.3:
                await self.approve_own(op)
            await self.decide(op, "withdrawal")
        return op

    async def request_deposit(self, requester: Principal) -> Op:
        """A customer asks to deposit TRY; an admin then approves or rejects it."""
        amount = kurus(self.rng, 10, 500)
        op = Op("deposit_request", requester.id, {"asset": CASH, "amount": amount}, key=str(uuid.uuid4()))
        self.book.deposit_requests.append(op)
        await self.send(op, lambda: self.client.deposit(requester, requester.id, CASH, amount, key=op.key))
        if op.accepted:
            await self.decide(op, "deposit")
        return op

    async def decide(self, request: Op, kind: str) -> Op:
        """Approve (seven times in ten; a withdrawal by the second admin) or reject the request."""
        verdict = "approve" if self.rng.random() < 0.7 else "reject"
        by = self.cast.second_admin if verdict == "approve" else self.admin
        body = {"kind": kind, "id": str(request.answer["id"]), "verdict": verdict}
        op = Op("decision", request.customer, body, key=str(uuid.uuid4()))
        self.book.decisions.append(op)
        return await self.send(op, lambda: self.client.decide(by, kind, body["id"], verdict, key=op.key))

    async def approve_own(self, request: Op) -> Op:
        """The admin who asked for a withdrawal tries to approve it: refused, four eyes (403)."""
        request_id = str(request.answer["id"])
        op = Op("four_eyes", request.customer, {"id": request_id})
        self.book.four_eyes.append(op)
        return await self.send(
            op, lambda: self.client.decide(self.admin, "withdrawal", request_id, "approve")
        )

    def order_terms(self) -> dict[str, Any]:
        roll = self.rng.random()
        if roll < 0.03:  # far more than anyone holds: refused by the account service
            return self._priced(Side.BUY, self.held[0], LIMIT, GTC, True, lots=100_000)
        if roll < 0.06:
            return self._priced(Side.SELL, self.unheld, LIMIT, GTC, True, lots=1)
        side = Side.BUY if roll < 0.55 else Side.SELL
        asset = self.rng.choice(list(self.market.instruments) if side is Side.BUY else self.held)
        kinds, weights = ORDER_KINDS, [k[3] for k in ORDER_KINDS]
        order_type, time_in_force, marketable, _ = self.rng.choices(kinds, weights)[0]
        return self._priced(side, asset, order_type, time_in_force, marketable, self.rng.randint(1, 10))

    def _priced(
        self,
        side: Side,
        asset: str,
        order_type: OrderType,
        time_in_force: TimeInForce,
        marketable: bool | None,
        lots: int,
    ) -> dict[str, Any]:
        """The terms of an order for `lots` lots of `asset`, its limit (if any) from the latest quote."""
        instrument, quote = self.market.instruments[asset], self.market.quotes[asset]
        price = None
        if marketable is not None:
            ticks = self.rng.randint(0, 3) if marketable else self.rng.randint(1, 6)
            price = limit_price(instrument, quote, side, ticks, marketable=marketable)
        size = instrument.lot_size * lots
        return {"side": side.value, "asset": asset, "size": size, "price": price,
                "type": order_type.value, "tif": time_in_force.value}  # fmt: skip

    def place(self, terms: dict[str, Any], key: str | None) -> Awaitable[Response]:
        body = {
            "customerId": terms["customer"],
            "assetName": terms["asset"],
            "orderSide": terms["side"],
            "size": str(terms["size"]),
            "orderType": terms["type"],
            "timeInForce": terms["tif"],
        }
        if terms["price"] is not None:
            body["price"] = str(terms["price"])
        headers = {**self.admin.headers, "Idempotency-Key": key} if key else self.admin.headers
        return self.client.request(
            "POST", self.client.url("order", "/api/v1/orders"), json=body, headers=headers
        )

    async def order(self, customer: str, cancel_at_once: bool = False) -> Op:
        terms = self.order_terms()
        op = Op("order", customer, terms, key=str(uuid.uuid4()))
        self.book.orders.append(op)
        await self.send(op, lambda: self.place({**terms, "customer": customer}, op.key))
        if op.accepted:
            order_id = str(op.answer["id"])
            self.recent[customer] = [*self.recent[customer][-9:], order_id]
            if cancel_at_once:  # races the account service's reservation
                await self.cancel(customer, order_id)
        return op

    async def cancel(self, customer: str, order_id: str | None = None) -> Op | None:
        order_id = order_id or (self.rng.choice(self.recent[customer]) if self.recent[customer] else None)
        if order_id is None:
            return None
        return await self._cancel(self.book.cancels, customer, order_id)

    async def sweep(self, customer: str, order_id: str) -> Op:
        """Cancel an order still resting once the faults have stopped (the market may never cross it)."""
        return await self._cancel(self.book.sweeps, customer, order_id)

    async def _cancel(self, kept_in: list[Op], customer: str, order_id: str) -> Op:
        op = Op("cancel", customer, {"order_id": order_id})
        kept_in.append(op)
        return await self.send(op, lambda: self.client.cancel_order(self.admin, order_id))

    # -- the run -----------------------------------------------------------------------------------
    async def fund(self) -> None:
        """Every customer's opening deposits: TRY and some of each held stock."""
        slots = asyncio.Semaphore(32)

        async def opening(customer: str) -> None:
            async with slots:
                await self.deposit(customer, CASH, kurus(self.rng, 2_000, 20_000))
                for stock in self.held:
                    await self.deposit(customer, stock, INITIAL_STOCK)

        await asyncio.gather(*(opening(c) for c in self.customers))

    async def run(self, orders: int, duration: float, in_flight: int = 64, on_tick: Any = None) -> None:
        """About `orders` orders spread over `duration` seconds with cancels, deposits and withdrawals
        among them; at most `in_flight` requests outstanding (an outage holds the next ones back)."""
        rate = orders / 0.8 / duration  # orders are four in five operations
        pending: set[asyncio.Task[Any]] = set()
        start = time.perf_counter()
        sent = 0
        while len(self.book.orders) < orders:
            due = start + sent / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            while len(pending) >= in_flight:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(self._one())
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
            if on_tick is not None and sent % 20 == 0:
                on_tick(self.book)
        if pending:
            await asyncio.wait(pending)
        self.finished_at = time.time()

    async def _one(self) -> None:
        customer = self.rng.choice(self.customers)
        roll = self.rng.random()
        if roll < 0.8:
            await self.order(customer, cancel_at_once=self.rng.random() < 0.05)
        elif roll < 0.87:
            await self.cancel(customer)
        elif roll < 0.91:
            await self.deposit(customer, CASH, kurus(self.rng, 10, 500))
        elif roll < 0.95:
            await self.withdraw(customer)
        elif roll < 0.975 and self.cast.requesters:
            await self.request_deposit(self.rng.choice(self.cast.requesters))
        else:
            await self.withdraw(customer, large=True)
