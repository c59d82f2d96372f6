"""The orders resting on the market, indexed so that a quote finds the ones it crosses without looking at
the others: per symbol, a heap of BUYs by highest limit and one of SELLs by lowest (the earliest first among
equal limits). A quote crosses a BUY when its ask is at or below the BUY's limit: only the top of the BUY heap
needs a look, and every order taken off it until one is not crossed is executable. Plain data, no I/O.

Removal is lazy (an order canceled or executed elsewhere stays in its heap, marked gone, until it reaches the
top or the heap is compacted), so adding, removing and taking are all O(log n).
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from oms.kernel.market import Quote
from oms.kernel.money import Side
from oms.order.domain import Order


class _Entry(NamedTuple):
    """A heap entry: compared as a tuple (in C), the order id breaking ties of limit and time."""

    rank: Decimal  # -limit for a BUY (highest first), limit for a SELL (lowest first)
    placed: datetime
    order_id: uuid.UUID


@dataclass
class _Heap:
    entries: list[_Entry] = field(default_factory=list)

    def top(self, live: dict[uuid.UUID, str]) -> _Entry | None:
        """The best order still resting (the gone ones above it dropped)."""
        while self.entries and self.entries[0].order_id not in live:
            heapq.heappop(self.entries)
        return self.entries[0] if self.entries else None


def _limit(entry: _Entry, side: Side) -> Decimal:
    return -entry.rank if side is Side.BUY else entry.rank


class RestingOrders:
    """LIMIT orders waiting for a quote that crosses them, by symbol and side."""

    def __init__(self) -> None:
        self._heaps: dict[tuple[str, Side], _Heap] = {}
        self._live: dict[uuid.UUID, str] = {}  # order id -> symbol, for the orders still resting

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._live

    def symbols(self) -> set[str]:
        """The symbols with orders resting."""
        return set(self._live.values())

    def add(self, orders: Iterable[Order]) -> None:
        """Let these orders rest (each must have a limit); one already resting is not added twice."""
        for order in orders:
            if order.id in self._live or order.price is None:
                continue
            rank = -order.price if order.side is Side.BUY else order.price
            key = (order.asset_name, order.side)
            heap = self._heaps.get(key)
            if heap is None:
                heap = self._heaps[key] = _Heap()
            heapq.heappush(heap.entries, _Entry(rank, order.created_at, order.id))
            self._live[order.id] = order.asset_name
        self._compact()

    def remove(self, order_ids: Iterable[uuid.UUID]) -> None:
        """These orders no longer rest (canceled, executed): they are dropped when they come up."""
        for order_id in order_ids:
            self._live.pop(order_id, None)

    def crosses(self, quote: Quote) -> bool:
        """True when `quote` crosses at least the best resting order of its symbol (a look at two tops)."""
        return any(self._crossed(quote, side) for side in Side)

    def take_crossed(self, quote: Quote) -> list[uuid.UUID]:
        """Take off the book every order `quote` crosses (best first): they are to be executed at it."""
        taken = []
        for side in Side:
            heap = self._heaps.get((quote.symbol, side))
            while heap is not None and self._crossed(quote, side):
                order_id = heapq.heappop(heap.entries).order_id
                del self._live[order_id]
                taken.append(order_id)
        return taken

    def _crossed(self, quote: Quote, side: Side) -> bool:
        heap = self._heaps.get((quote.symbol, side))
        top = heap.top(self._live) if heap else None
        return top is not None and quote.crosses(side, _limit(top, side))

    def _compact(self) -> None:
        """Rebuild the heaps once gone entries outnumber resting ones (lazy removal must not grow forever)."""
        stored = sum(len(h.entries) for h in self._heaps.values())
        if stored <= 2 * len(self._live) + 64:
            return
        for key, heap in list(self._heaps.items()):
            heap.entries = [e for e in heap.entries if e.order_id in self._live]
            heapq.heapify(heap.entries)
            if not heap.entries:
                del self._heaps[key]
