"""What the clients saw while the faults went on: how many requests were answered at the first attempt,
the longest stretch without a successful create, how long standby relays took to take over and how long the
events stream stalled when its NATS leader was killed."""

from __future__ import annotations

import statistics
from itertools import pairwise
from typing import Any

from oms.chaos.faults import FaultLog
from oms.chaos.workload import Ledger


def _spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "median_s": round(statistics.median(values), 2),
        "max_s": round(max(values), 2),
    }


def longest_gap(times: list[float], start: float, end: float) -> tuple[float, float]:
    """The longest interval in [start, end] holding none of `times`: (its length, when it began)."""
    inside = sorted(t for t in times if start <= t <= end)
    edges = [start, *inside, end]
    length, began = max(((b - a, a) for a, b in pairwise(edges)), default=(0.0, start))
    return length, began


def availability(book: Ledger, faults: FaultLog, load_start: float, load_end: float) -> dict[str, Any]:
    """The figures of one run; `load_start`/`load_end` (time.time()) bound the workload under faults."""
    sent = [op for op in book.all() if op.sent_at is not None and load_start <= op.sent_at <= load_end]
    first = sum(op.attempts == 1 and op.answered_at is not None for op in sent)
    creates = [op.answered_at for op in book.orders if op.accepted and op.answered_at is not None]
    gap, began = longest_gap(creates, load_start, load_end)
    stalls = [k["stall_s"] for k in faults.leader_kills if k["stall_s"] is not None]
    elections = [k["election_s"] for k in faults.leader_kills if k["election_s"] is not None]
    return {
        "requests": len(sent),
        "answered_first_time": first,
        "answered_first_time_pct": round(100 * first / len(sent), 2) if sent else None,
        "longest_without_a_create_s": round(gap, 2),
        "longest_without_a_create_from_s": round(began - load_start, 1),
        "relay_takeover": _spread(faults.takeovers),
        "relay_taken_back_by_the_killed_one": faults.taken_back,
        "leader_kills": faults.leader_kills,
        "leader_election": _spread(elections),
        "publish_stall": _spread(stalls),
    }
