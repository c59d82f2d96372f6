"""OMS_MARKET_CLOSE: the close of each day in the market's time zone (default 18:00 Europe/Istanbul)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from oms.kernel.settings import MarketClose, Settings

ISTANBUL = Settings().close()  # 18:00 Europe/Istanbul, UTC+3 all year


@pytest.mark.parametrize(
    ("now", "last", "next_"),
    [
        (
            datetime(2026, 3, 2, 10, 0, tzinfo=UTC),
            datetime(2026, 3, 1, 15, 0, tzinfo=UTC),
            datetime(2026, 3, 2, 15, 0, tzinfo=UTC),
        ),
        (
            datetime(2026, 3, 2, 15, 0, tzinfo=UTC),
            datetime(2026, 3, 2, 15, 0, tzinfo=UTC),
            datetime(2026, 3, 3, 15, 0, tzinfo=UTC),
        ),
        (
            datetime(2026, 3, 2, 22, 0, tzinfo=UTC),
            datetime(2026, 3, 2, 15, 0, tzinfo=UTC),
            datetime(2026, 3, 3, 15, 0, tzinfo=UTC),
        ),
    ],
)
def test_close_last_and_next_in_istanbul(now: datetime, last: datetime, next_: datetime) -> None:
    assert (ISTANBUL.last(now), ISTANBUL.next(now)) == (last, next_)


def test_close_other_time_and_zone() -> None:
    close = MarketClose.parse("16:30 America/New_York")
    assert close.next(datetime(2026, 7, 1, 12, 0, tzinfo=UTC)) == datetime(2026, 7, 1, 20, 30, tzinfo=UTC)


@pytest.mark.parametrize("value", ["6pm", "25:00", "18:00 Mars/Olympus"])
def test_close_setting_not_a_time_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="market close"):
        Settings(market_close=value)
