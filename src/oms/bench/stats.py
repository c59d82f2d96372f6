"""Small statistics for latency samples and time series (no numpy: a few hundred thousand floats at most)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank `p`th percentile (0 < p ≤ 100) of already sorted values; NaN if there are none."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: Iterable[float]) -> dict[str, Any]:
    """count, mean, p50, p90, p99 and max of latencies given in seconds, reported in milliseconds."""
    values = sorted(seconds)
    if not values:
        return {"count": 0}
    ms = [v * 1000 for v in values]
    return {
        "count": len(ms),
        "mean_ms": round(sum(ms) / len(ms), 3),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(ms[-1], 3),
    }


def per_second(times: Iterable[float], start: float, end: float) -> list[int]:
    """How many of `times` fall in each whole second from `start` to `end`."""
    buckets = [0] * max(1, math.ceil(end - start))
    for t in times:
        index = int(t - start)
        if 0 <= index < len(buckets):
            buckets[index] += 1
    return buckets


def steady_rate(counts: Sequence[int], trim: int = 2) -> float:
    """Events per second over the middle of a run: the first and last `trim` seconds (ramp-up and
    ramp-down) are left out when the run is long enough."""
    middle = counts[trim:-trim] if len(counts) > 2 * trim + 2 else counts
    return sum(middle) / len(middle) if middle else 0.0


def ratio(measured: float | None, limit: float | None) -> float | None:
    """measured / limit, or None when either is unknown or the limit is zero."""
    if measured is None or limit is None or not limit or math.isnan(measured) or math.isnan(limit):
        return None
    return measured / limit


def bucket_percentile(before: dict[float, float], after: dict[float, float], p: float) -> float | None:
    """The upper bound of the histogram bucket that holds the `p`th percentile of what was observed between
    two readings of its cumulative buckets (upper bound → count); None when nothing was observed."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    wanted = p / 100 * counts[-1]
    return next(b for b, c in zip(bounds, counts, strict=True) if c >= wanted)
