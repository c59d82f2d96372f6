"""The market service's `replay` source with real PostgreSQL, NATS and auth: a CSV file's quotes are
published in its order, each symbol's numbered from 1, and a file that cannot be read stops the start."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal as D
from pathlib import Path

import pytest

from oms.auth.app import create_app as create_auth
from oms.kernel.market import Quote
from oms.kernel.market_view import follow_market
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.settings import QuoteSource, Settings
from oms.market.app import create_app
from oms.runtime.nats import EmbeddedNats
from tests.integration.auth_service import make_settings
from tests.integration.served import served
from tests.integration.test_market_service import (
    fresh_streams,
    list_some,
    market_settings,
    running_market,
    until,
)


async def test_a_replayed_file_is_published_quote_by_quote_in_its_order_once(
    make_database: Callable[[str], str],
    nats_server: EmbeddedNats,
    operator: NatsAccess,
    nats_identity: Callable[[str], NatsAccess],
    tmp_path: Path,
) -> None:
    await fresh_streams(operator)
    replay = tmp_path / "quotes.csv"
    replay.write_text(
        "time,symbol,bid,ask,last\n"
        "0,AAPL,249.60,249.62,249.61\n"
        "0,MSFT,24.20,24.22,24.21\n"
        "0.5,AAPL,249.70,249.73,249.70\n"
        "1,AAPL,249.50,249.55,249.50\n"
    )
    db = make_database("market_replay")
    auth_settings = make_settings(make_database("auth"), tmp_path / "data")
    nc = await connect_nats(nats_identity("order"))
    heard: list[tuple[str, int, D]] = []

    async def listener(quote: Quote) -> None:
        heard.append((quote.symbol, quote.sequence, quote.ask))

    try:
        async with (
            served(create_auth(auth_settings), auth_settings) as auth_url,
            follow_market(nc) as view,
        ):
            view.listen(listener)
            settings = market_settings(
                auth_settings,
                db,
                nats_server,
                auth_url=auth_url,
                market_source=QuoteSource.REPLAY,
                market_replay_file=replay,
                market_replay_speed=10,
            )
            await list_some(db)
            async with running_market(settings):
                await until(lambda: len(heard) >= 4, "4 replayed quotes")
                await asyncio.sleep(
                    2.5
                )  # played to its end, the file is not played again (it was, each second)
    finally:
        await nc.close()
    assert heard == [
        ("AAPL", 1, D("249.62")),
        ("MSFT", 1, D("24.22")),
        ("AAPL", 2, D("249.73")),
        ("AAPL", 3, D("249.55")),
    ]


def test_a_replay_file_that_cannot_be_read_stops_the_start(tmp_path: Path) -> None:
    settings = Settings(market_source=QuoteSource.REPLAY, market_replay_file=tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=r"cannot read .*missing\.csv"):
        create_app(settings)
