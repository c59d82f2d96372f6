"""Two back-office replicas share the audit through the broker (decision 018): while one runs it, the other
answers "an audit is running" and shows it running; both show the result once it is done; a lease left by a
holder that died (never renewed, never released) ends by itself, and the audit runs again. Served by uvicorn,
with auth, the audit's two databases and NATS for real."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from oms.auth.app import create_app as auth_app
from oms.backoffice.app import create_app as backoffice_app
from oms.backoffice.audits import LAST_KEY, LEASE_KEY
from oms.kernel.broker import JetStreamBroker
from oms.kernel.db import migrate
from oms.kernel.lease import Lease
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.permissions import BACKOFFICE, OPERATOR
from oms.kernel.settings import Settings
from oms.kernel.topology import BACKOFFICE_BUCKET
from oms.runtime.nats import EmbeddedNats
from tests.integration.auth_service import ADMIN, make_settings
from tests.integration.conftest import eventually
from tests.integration.served import served
from tests.integration.test_audit import settled_buy
from tests.integration.test_backoffice_live import signed_in

pytestmark = pytest.mark.timeout(180)
IN_FLIGHT_SECONDS = (
    5  # an order MATCHED with its reservation still HELD keeps the audit re-checking this long
)


@pytest.fixture(scope="module")
async def settings(
    make_database: Callable[[str], str], nats_server: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Settings]:
    order_url, account_url = make_database("order"), make_database("account")
    migrate("order", order_url)
    migrate("account", account_url)
    settled_buy(order_url, account_url, res_status="HELD")  # in flight: the audit waits for it
    settings = make_settings(
        make_database("auth"),
        Path(tmp_path_factory.mktemp("shared-audit")),
        audit_order_database_url=order_url,
        audit_account_database_url=account_url,
        nats_url=nats_server.url,
        nats_identities_dir=nats_server.identities,
    )
    async with served(auth_app(settings), settings) as auth:
        yield settings.model_copy(update={"auth_url": auth})


@pytest.fixture(scope="module")
async def replicas(settings: Settings, nats_server: EmbeddedNats) -> AsyncIterator[tuple[str, str]]:
    """Two back offices on the same broker (as two `oms serve backoffice` behind a load balancer)."""
    topology = await JetStreamBroker.connect(nats_server.access(OPERATOR), once=True)
    await topology.ensure_topology()  # the back office's bucket with it
    await topology.close()
    await _forget_audits(nats_server.access(BACKOFFICE))
    async with (
        served(backoffice_app(settings), settings) as one,
        served(backoffice_app(settings), settings) as two,
    ):
        yield one, two


async def _forget_audits(access: NatsAccess) -> None:
    """The session's broker may keep another module's audit: this module starts with none."""
    nc = await connect_nats(access, once=True)
    kv = await nc.jetstream().key_value(BACKOFFICE_BUCKET)
    for key in (LEASE_KEY, LAST_KEY):
        await kv.delete(key)
    await nc.close()


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None, page[:500]
    return found.group(1)


async def _audit_section(admin: httpx.AsyncClient) -> str:
    page = (await admin.get("/admin/system")).text
    return page[page.index('id="audit"') :]


async def _run_audit(admin: httpx.AsyncClient) -> str:
    """Press Run audit; where the page sends the admin afterwards."""
    form = (await admin.get("/admin/system")).text
    answer = await admin.post("/admin/system/audit", data={"csrf_token": _csrf(form)}, timeout=60)
    assert answer.status_code == 303, answer.text[:500]
    return answer.headers["location"]


async def _running(admin: httpx.AsyncClient) -> bool:
    return "Running…" in await _audit_section(admin)


async def test_one_audit_at_a_time_across_replicas_and_every_replica_shows_the_result(
    replicas: tuple[str, str],
) -> None:
    one, two = replicas
    async with (
        signed_in(one, ADMIN["username"], ADMIN["password"]) as first,
        signed_in(two, ADMIN["username"], ADMIN["password"]) as second,
    ):
        assert 'id="audit-result">Not run yet.' in await _audit_section(second)
        running = asyncio.create_task(_run_audit(first))
        await eventually(lambda: _running(second), within=IN_FLIGHT_SECONDS, what="the other replica sees it")
        assert await _run_audit(second) == "/admin/system?notice=audit-running#audit"
        assert "An audit is running" in (await second.get("/admin/system?notice=audit-running")).text
        assert await running == "/admin/system?notice=audited#audit"
        for admin in (first, second):
            section = await _audit_section(admin)
            assert 'data-clean="false"' in section and "Run audit" in section, section[:2000]
            assert f"still in flight after {IN_FLIGHT_SECONDS}s" in section


async def test_a_lease_left_by_a_dead_holder_ends_by_itself(
    replicas: tuple[str, str], nats_server: EmbeddedNats
) -> None:
    _, two = replicas
    nc = await connect_nats(nats_server.access(BACKOFFICE), once=True)
    try:
        dead = await Lease.of(nc.jetstream(), BACKOFFICE_BUCKET, LEASE_KEY, seconds=2)
        assert await dead.acquire("a replica killed mid-audit") is not None  # never renewed, never released
        async with signed_in(two, ADMIN["username"], ADMIN["password"]) as admin:
            assert await _running(admin)
            assert await _run_audit(admin) == "/admin/system?notice=audit-running#audit"

            async def ended() -> bool:
                return not await _running(admin)

            await eventually(ended, within=10, what="the dead holder's lease ended")
            assert await _run_audit(admin) == "/admin/system?notice=audited#audit"
    finally:
        await nc.close()
