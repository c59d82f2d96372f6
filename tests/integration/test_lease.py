"""A lease in a JetStream key-value bucket (kernel/lease.py), on the real server: one holder at a time, kept
past its length while renewed, gone by itself when not, and never renewed or released by a holder whose
lease ran out and was taken by another."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.js import JetStreamContext

from oms.kernel.broker import JetStreamBroker
from oms.kernel.lease import Lease, LeaseTaken
from oms.kernel.nats_access import connect_nats
from oms.kernel.permissions import BACKOFFICE, OPERATOR
from oms.kernel.topology import BACKOFFICE_BUCKET
from oms.runtime.nats import EmbeddedNats
from tests.integration.conftest import eventually


@pytest.fixture
async def js(nats_server: EmbeddedNats) -> AsyncIterator[JetStreamContext]:
    """JetStream as the back office, whose bucket the leases are in."""
    topology = await JetStreamBroker.connect(nats_server.access(OPERATOR), once=True)
    await topology.ensure_topology()
    await topology.close()
    nc = await connect_nats(nats_server.access(BACKOFFICE), once=True)
    yield nc.jetstream()
    await nc.close()


async def lease(js: JetStreamContext, seconds: int) -> Lease:
    return await Lease.of(js, BACKOFFICE_BUCKET, f"test.{uuid.uuid4().hex}", seconds)


async def test_one_holder_at_a_time_kept_while_renewed_and_free_once_released(js: JetStreamContext) -> None:
    mine = await lease(js, 1)
    async with mine.held("me"):
        with pytest.raises(LeaseTaken) as taken:
            async with mine.held("another"):
                pytest.fail("two holders at once")
        assert taken.value.holder == "me"
        await asyncio.sleep(2.5)  # past its length: renewed meanwhile
        assert await mine.holder() == "me"
    assert await mine.holder() is None
    assert await mine.acquire("another") is not None


async def test_a_lease_not_renewed_ends_and_its_old_holder_cannot_renew_or_release_it(
    js: JetStreamContext,
) -> None:
    mine = await lease(js, 1)
    revision = await mine.acquire("dead")
    assert revision is not None

    async def ended() -> bool:
        return await mine.holder() is None

    await eventually(ended, within=5, what="the lease ended")
    assert await mine.acquire("next") is not None
    assert await mine.renew("dead", revision) is None
    await mine.release(revision)
    assert await mine.holder() == "next"
