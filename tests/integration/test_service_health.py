"""Every service's probes for orchestrators, served by uvicorn on servers the tests stop and start again:
/livez answers whatever its dependencies do; /readyz (and /health, as before) answers 503 naming the
dependency that does not answer — the database, the broker — and 200 again once it is back; none needs a
token or tells more than the kind of failure."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from oms.account.app import create_app as account_app
from oms.auth.app import create_app as auth_app
from oms.kernel.settings import Settings
from oms.runtime.nats import EmbeddedNats
from oms.runtime.postgres import EmbeddedPostgres
from tests.integration.auth_service import make_settings
from tests.integration.conftest import eventually
from tests.integration.served import served

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
async def settings(
    private_pg: EmbeddedPostgres, private_nats: EmbeddedNats, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    names = {service: f"{service}_{uuid.uuid4().hex[:8]}" for service in ("auth", "account")}
    private_pg.create_databases(list(names.values()))
    return make_settings(
        private_pg.url(names["auth"]),
        Path(tmp_path_factory.mktemp("health")),
        account_database_url=private_pg.url(names["account"]),
        nats_url=private_nats.url,
        nats_identities_dir=private_nats.identities,
    )


@pytest.fixture(scope="module")
async def auth(settings: Settings) -> AsyncIterator[str]:
    async with served(auth_app(settings), settings) as url:
        yield url


@pytest.fixture(scope="module")
async def account(settings: Settings, auth: str) -> AsyncIterator[str]:
    with_auth = settings.model_copy(update={"auth_url": auth})
    async with served(account_app(with_auth), with_auth) as url:
        yield url


async def readiness(url: str) -> tuple[int, dict[str, object]]:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"{url}/readyz")
    return answer.status_code, answer.json()


async def live(url: str) -> bool:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"{url}/livez")
    return answer.status_code == 200 and answer.json() == {"status": "ok"}


async def test_both_probes_answer_200_while_everything_answers(auth: str, account: str) -> None:
    assert await readiness(auth) == (200, {"status": "ok", "checks": {"database": "ok"}})
    assert await readiness(account) == (200, {"status": "ok", "checks": {"database": "ok", "broker": "ok"}})
    assert await live(auth) and await live(account)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{account}/health")).json() == (await readiness(account))[1]


async def test_without_the_database_a_service_is_live_but_not_ready_until_it_is_back(
    auth: str, account: str, private_pg: EmbeddedPostgres
) -> None:
    private_pg.stop()
    try:
        for url in (auth, account):
            status, body = await readiness(url)
            assert status == 503, body
            assert body["status"] == "unavailable"
            database = body["checks"]["database"]  # type: ignore[index]
            assert database.startswith("unavailable: "), body
            assert private_pg.password not in database and "postgresql://" not in database
            assert await live(url)
        assert (await readiness(account))[1]["checks"]["broker"] == "ok"  # type: ignore[index]
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{auth}/health")).status_code == 503
    finally:
        private_pg.start()

    async def ready_again() -> bool:
        return [(await readiness(url))[0] for url in (auth, account)] == [200, 200]

    await eventually(ready_again, within=30, what="both services ready again")


async def test_without_the_broker_an_event_service_is_live_but_not_ready_until_it_is_back(
    account: str, private_nats: EmbeddedNats
) -> None:
    private_nats.stop()
    try:

        async def not_ready() -> bool:
            return (await readiness(account))[0] == 503

        await eventually(not_ready, within=15, what="the account service not ready")
        checks = (await readiness(account))[1]["checks"]
        assert checks == {"database": "ok", "broker": "unavailable: ConnectionError"}, checks
        assert await live(account)
    finally:
        private_nats.start()

    async def ready_again() -> bool:
        return (await readiness(account))[0] == 200

    await eventually(ready_again, within=30, what="the account service ready again")


async def test_the_probes_are_in_the_openapi_document_with_their_answers(account: str) -> None:
    async with httpx.AsyncClient() as client:
        paths = (await client.get(f"{account}/openapi.json")).json()["paths"]
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
    assert set(paths["/health"]["get"]["responses"]) == {"200", "503"}
    assert set(paths["/livez"]["get"]["responses"]) == {"200"}
