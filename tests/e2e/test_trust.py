"""Issue 9's attack against a real `oms up`: a forged `order.created` + `order.matched` pair that would turn a
customer's 1 TRY into a fortune. Without credentials the broker refuses the connection; with any component's
credentials but the order relay's, the publish is refused or the event dead-lettered. Nothing changes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import nats
import nats.errors
import pytest

from oms.kernel.broker import DeadLetter, JetStreamBroker
from oms.kernel.dlq import list_dead_letters
from oms.kernel.events import Envelope, OrderCreated, OrderMatched
from oms.kernel.money import Side
from oms.kernel.nats_access import connect_nats
from oms.kernel.permissions import IDENTITIES, OPERATOR
from oms.kernel.topology import PRODUCERS
from tests.e2e.api import Api, User
from tests.e2e.conftest import RunningSystem

pytestmark = pytest.mark.e2e

FORTUNE = Decimal(10**9)


def forged_pair(victim: User) -> list[Envelope[Any]]:
    """Valid envelopes of a sale of a billion AAPL at 1 TRY the victim never placed nor held."""
    terms: dict[str, Any] = {
        "order_id": uuid.uuid4(),
        "customer_id": uuid.UUID(victim.id),
        "occurred_at": datetime.now(UTC),
        "asset_name": "AAPL",
        "side": Side.SELL,
        "size": FORTUNE,
        "price": Decimal(1),
    }
    return [Envelope.of(OrderCreated(**terms)), Envelope.of(OrderMatched(**terms))]


async def _publish_as(
    system: RunningSystem, identity: str, subject: str | None, event: Envelope[Any]
) -> bool:
    """Whether the broker stored `event` published as `identity` (on its own subject unless given)."""
    nc = await connect_nats(system.broker_access(identity), once=True, error_cb=_ignore)
    try:
        js = nc.jetstream(timeout=1)
        await js.publish(subject or event.subject, event.to_json(), headers={"Nats-Msg-Id": str(event.id)})
        return True
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError, TimeoutError):
        return False
    finally:
        await nc.close()


async def _ignore(_: Exception) -> None:
    """The permission violations are what this test provokes."""


async def _anonymous(system: RunningSystem) -> None:
    url = f"nats://127.0.0.1:{system.env['OMS_NATS_PORT']}"
    await nats.connect(servers=[url], allow_reconnect=False, connect_timeout=2, error_cb=_ignore)


async def _letters(system: RunningSystem) -> list[DeadLetter]:
    broker = await JetStreamBroker.connect(system.broker_access(OPERATOR), once=True)
    try:
        return await list_dead_letters(broker)
    finally:
        await broker.close()


def refused_letters(system: RunningSystem, count: int, timeout: float = 30) -> list[DeadLetter]:
    """The dead letters the consumers refused as forged, once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = [x for x in asyncio.run(_letters(system)) if x.error.startswith("refused:")]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_a_forged_order_pair_changes_nothing_whoever_publishes_it(system: RunningSystem) -> None:
    api = Api(system)
    admin, victim = api.admin(), api.customer()
    assert api.deposit(admin, victim, "TRY", "1").status_code == 200
    assert api.wait_balances(admin, victim, {"TRY": ("1", "1")}) == {"TRY": (Decimal(1), Decimal(1))}
    forged = forged_pair(victim)

    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        asyncio.run(_anonymous(system))
    for identity in IDENTITIES:
        if identity in (OPERATOR, PRODUCERS["order"].relay):
            continue
        for event in forged:
            assert not asyncio.run(_publish_as(system, identity, None, event)), (identity, event.type)
    # The account's relay may publish on oms.funds.*: the order consumer takes no order events there.
    relay_account = PRODUCERS["account"].relay
    for event in forged:
        assert asyncio.run(_publish_as(system, relay_account, "oms.funds.reserved", event))
    letters = refused_letters(system, len(forged))
    assert sorted(x.msg_id for x in letters) == sorted(str(e.id) for e in forged)
    assert {(x.consumer, x.subject) for x in letters} == {("order", "oms.funds.reserved")}

    # A real order after the attempts: once it is matched, every consumer has passed them.
    buyer = api.customer()
    api.deposit(admin, buyer, "TRY", "1000")
    bought = api.place(buyer, "BUY", "AAPL", "1", api.marketable(buyer, "BUY"))
    assert api.wait_order(buyer, bought)["status"] == "MATCHED"
    assert api.balances(admin, victim) == {"TRY": (Decimal(1), Decimal(1))}
    assert api.orders_of(admin, victim) == []
    assert api.get_order(admin, str(forged[0].order_id)).status_code == 404
    audit = subprocess.run(
        [sys.executable, "-m", "oms", "audit", "--data-dir", str(system.data_dir)],
        env=system.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_identities_are_kept_across_a_restart(system: RunningSystem) -> None:
    seeds = {p.name: p.read_bytes() for p in (system.data_dir / "secrets" / "nats").iterdir()}
    assert sorted(seeds) == sorted(f"{identity}.nk" for identity in IDENTITIES)
    system.stop()
    system.start()
    assert {p.name: p.read_bytes() for p in (system.data_dir / "secrets" / "nats").iterdir()} == seeds
    api = Api(system)
    admin, customer = api.admin(), api.customer()
    api.deposit(admin, customer, "TRY", "1000")
    bought = api.place(customer, "BUY", "AAPL", "1", api.marketable(customer, "BUY"))
    assert api.wait_order(customer, bought)["status"] == "MATCHED"
