"""The auth service over HTTP, in-process, on a real PostgreSQL database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from oms.kernel.http import client_networks
from oms.kernel.settings import Settings
from tests.conftest import execute
from tests.integration.auth_service import ADMIN, auth_client, bearer, make_settings, token_of


@pytest.fixture(scope="module")
def auth_db(make_database: Callable[[str], str]) -> str:
    return make_database("auth")


@pytest.fixture(scope="module")
def settings(auth_db: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(auth_db, tmp_path_factory.mktemp("data"))


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with auth_client(settings) as c:
        yield c


async def test_register_customer_then_login_gives_bearer_token(client: httpx.AsyncClient) -> None:
    created = await client.post("/register", json={"username": "alice", "password": "alice-pass"})
    assert created.status_code == 201
    assert created.json()["message"] == "user created"
    login = await client.post("/login", json={"username": "alice", "password": "alice-pass"})
    assert login.status_code == 200
    body = login.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600


async def test_register_taken_username_any_case_is_409(client: httpx.AsyncClient) -> None:
    assert (
        await client.post("/register", json={"username": "bob", "password": "bob-pass-1"})
    ).status_code == 201
    again = await client.post("/register", json={"username": "BOB", "password": "other-pass"})
    assert again.status_code == 409
    assert again.json()["error"] == "username already taken"


@pytest.mark.parametrize(
    "body",
    [
        {"username": "ab", "password": "long-enough"},
        {"username": "bad name", "password": "long-enough"},
        {"username": "carol", "password": "short"},
        {"username": "carol"},
        {"password": "long-enough"},
        {"username": "carol", "password": "long-enough", "role": "root"},
        {"username": 5, "password": "long-enough"},
    ],
)
async def test_register_invalid_input_is_4xx_and_creates_nothing(
    client: httpx.AsyncClient, auth_db: str, body: dict[str, object]
) -> None:
    before = execute(auth_db, "SELECT count(*) FROM users")
    response = await client.post("/register", json=body)
    assert response.status_code == 422
    assert "error" in response.json()
    assert execute(auth_db, "SELECT count(*) FROM users") == before


async def test_register_admin_without_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/register", json={"username": "mallory", "password": "mallory-1", "role": "admin"}
    )
    assert response.status_code == 401


async def test_register_admin_as_customer_is_403(client: httpx.AsyncClient) -> None:
    await client.post("/register", json={"username": "eve", "password": "eve-pass-1"})
    token = await token_of(client, "eve", "eve-pass-1")
    response = await client.post(
        "/register",
        json={"username": "eve-admin", "password": "eve-pass-1", "role": "admin"},
        headers=bearer(token),
    )
    assert response.status_code == 403
    assert (
        await client.post("/login", json={"username": "eve-admin", "password": "eve-pass-1"})
    ).status_code == 401


async def test_register_admin_by_admin_is_created(client: httpx.AsyncClient) -> None:
    admin = await token_of(client, **ADMIN)
    response = await client.post(
        "/register",
        json={"username": "second-admin", "password": "second-pass", "role": "admin"},
        headers=bearer(admin),
    )
    assert response.status_code == 201
    users = (await client.get("/users", headers=bearer(admin))).json()["users"]
    assert {"second-admin": "admin"}.items() <= {u["username"]: u["role"] for u in users}.items()


async def test_login_unknown_user_and_wrong_password_say_the_same(client: httpx.AsyncClient) -> None:
    await client.post("/register", json={"username": "dave", "password": "dave-pass-1"})
    unknown = await client.post("/login", json={"username": "nobody", "password": "whatever1"})
    wrong = await client.post("/login", json={"username": "dave", "password": "wrong-pass"})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()


async def test_users_as_admin_lists_users_without_hashes(client: httpx.AsyncClient, auth_db: str) -> None:
    admin = await token_of(client, **ADMIN)
    response = await client.get("/users", headers=bearer(admin))
    assert response.status_code == 200
    users = response.json()["users"]
    assert all(set(u) == {"id", "username", "role", "createdAt", "disabled"} for u in users)
    hashes = [row[0] for row in execute(auth_db, "SELECT password_hash FROM users")]
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)
    assert not any(h in response.text for h in hashes)
    assert "argon2" not in response.text


async def test_users_without_token_is_401_and_as_customer_is_403(client: httpx.AsyncClient) -> None:
    assert (await client.get("/users")).status_code == 401
    assert (await client.get("/users", headers=bearer("not-a-token"))).status_code == 401
    await client.post("/register", json={"username": "frank", "password": "frank-pass"})
    customer = await token_of(client, "frank", "frank-pass")
    response = await client.get("/users", headers=bearer(customer))
    assert response.status_code == 403
    assert response.json()["error"] == "admin role required"


async def test_jwks_serves_one_public_ed25519_key(client: httpx.AsyncClient) -> None:
    keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "OKP" and keys[0]["crv"] == "Ed25519" and keys[0]["alg"] == "EdDSA"
    assert "d" not in keys[0]


async def test_health_metrics_and_docs_are_served(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.json() == {"status": "ok", "checks": {"database": "ok"}}
    await client.get("/users")
    metrics = (await client.get("/metrics")).text
    assert 'oms_http_requests_total{method="GET",route="/users",status="401"}' in metrics
    assert (await client.get("/openapi.json")).json()["info"]["title"] == "OMS auth"
    assert (await client.get("/docs")).status_code == 200


async def test_metrics_are_served_only_to_the_configured_client_networks(settings: Settings) -> None:
    async with auth_client(settings, address="203.0.113.7") as outside:
        refused = await outside.get("/metrics")
        assert refused.status_code == 403
        assert refused.json()["error"] == "metrics are served only to the addresses in OMS_METRICS_CLIENTS"
        assert (await outside.get("/health")).status_code == 200
    opened = settings.model_copy(update={"metrics_clients": "10.0.0.0/8, 203.0.113.0/24"})
    async with auth_client(opened, address="203.0.113.7") as allowed:
        assert (await allowed.get("/metrics")).status_code == 200


def test_a_metrics_client_list_that_is_not_networks_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"OMS_METRICS_CLIENTS: .*'internal'"):
        client_networks("127.0.0.1, internal")
    assert client_networks("*") is None


async def test_bootstrap_admin_is_not_recreated_on_restart(settings: Settings, auth_db: str) -> None:
    async with auth_client(settings):
        pass
    rows = execute(auth_db, f"SELECT count(*) FROM users WHERE username = '{ADMIN['username']}'")
    assert rows == [(1,)]


async def test_login_repeated_failures_for_a_username_are_429_with_retry_after(
    make_database: Callable[[str], str], tmp_path: Path
) -> None:
    settings = make_settings(make_database("auth"), tmp_path, login_user_max_failures=3)
    async with auth_client(settings) as client:
        await client.post("/register", json={"username": "grace", "password": "grace-pass"})
        statuses = [
            (await client.post("/login", json={"username": "grace", "password": "wrong-pass"})).status_code
            for _ in range(3)
        ]
        assert statuses == [401, 401, 401]
        locked = await client.post("/login", json={"username": "grace", "password": "grace-pass"})
        assert locked.status_code == 429
        assert 0 < int(locked.headers["Retry-After"]) <= 30
        # Other users are not affected by grace's lock.
        assert (await client.post("/login", json={**ADMIN})).status_code == 200


async def test_login_parallel_guesses_cannot_pass_the_limit(
    make_database: Callable[[str], str], tmp_path: Path
) -> None:
    settings = make_settings(make_database("auth"), tmp_path, login_user_max_failures=3)
    async with auth_client(settings) as client:
        await client.post("/register", json={"username": "heidi", "password": "heidi-pass"})
        guesses = [
            client.post("/login", json={"username": "heidi", "password": f"guess-{i:04}"}) for i in range(12)
        ]
        statuses = sorted(r.status_code for r in await asyncio.gather(*guesses))
        assert statuses.count(401) == 3
        assert statuses.count(429) == 9


async def test_login_failures_from_one_address_are_429(
    make_database: Callable[[str], str], tmp_path: Path
) -> None:
    settings = make_settings(make_database("auth"), tmp_path, login_address_max_failures=4)
    async with auth_client(settings, address="203.0.113.9") as attacker:
        statuses = [
            (
                await attacker.post("/login", json={"username": f"user{i}", "password": "password1"})
            ).status_code
            for i in range(6)
        ]
    assert statuses[:4] == [401] * 4
    assert statuses[4:] == [429, 429]
    async with auth_client(settings, address="198.51.100.7") as someone_else:
        assert (await someone_else.post("/login", json=ADMIN)).status_code == 200
