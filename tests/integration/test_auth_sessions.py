"""Ending sessions and changing credentials at the auth service, on a real PostgreSQL database: sign-out,
password changes, disabled users, and the list of revoked tokens other services and replicas follow."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from oms.auth import store
from oms.auth.keys import SigningKey
from oms.kernel.revocation import SERVICE_KEY_HEADER
from oms.kernel.secret_file import read_or_create
from oms.kernel.settings import Settings
from tests.integration.auth_service import ADMIN, auth_client, bearer, make_settings, token_of

PASSWORD = "password-1"


@pytest.fixture(scope="module")
def settings(make_database: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(make_database("auth"), tmp_path_factory.mktemp("data"), revocation_poll_seconds=0.2)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with auth_client(settings) as c:
        yield c


async def customer(client: httpx.AsyncClient) -> tuple[str, str, str]:
    """A new customer: id, username, token."""
    name = f"c-{uuid.uuid4().hex[:10]}"
    created = await client.post("/register", json={"username": name, "password": PASSWORD})
    assert created.status_code == 201, created.text
    return created.json()["id"], name, await token_of(client, name, PASSWORD)


async def accepted(client: httpx.AsyncClient, token: str) -> int:
    """The status of a request only a valid token passes (a customer's is refused later, with 403)."""
    return (await client.get("/users", headers=bearer(token))).status_code


async def test_logout_refuses_that_token_at_once_and_no_other(client: httpx.AsyncClient) -> None:
    first, second = await token_of(client, **ADMIN), await token_of(client, **ADMIN)
    assert (await client.post("/logout", headers=bearer(first))).status_code == 204
    refused = await client.get("/users", headers=bearer(first))
    assert (refused.status_code, refused.json()["error"]) == (401, "token revoked")
    assert await accepted(client, second) == 200
    assert (await client.post("/logout", headers=bearer(first))).status_code == 401
    assert (await client.post("/logout")).status_code == 401


async def test_a_password_change_refuses_older_tokens_and_the_new_password_works_at_once(
    client: httpx.AsyncClient,
) -> None:
    _, name, token = await customer(client)
    other_session = await token_of(client, name, PASSWORD)
    change = {"currentPassword": "wrong-password", "newPassword": "new-password-2"}
    assert (await client.post("/users/me/password", json=change, headers=bearer(token))).status_code == 403
    weak = {"currentPassword": PASSWORD, "newPassword": " " * 8}
    assert (await client.post("/users/me/password", json=weak, headers=bearer(token))).status_code == 422
    change["currentPassword"] = PASSWORD
    assert (await client.post("/users/me/password", json=change, headers=bearer(token))).status_code == 204
    for old in (token, other_session):
        assert await accepted(client, old) == 401
    assert (await client.post("/login", json={"username": name, "password": PASSWORD})).status_code == 401
    # Most likely within the second of the change: the token is issued from the next second, so it is valid.
    fresh = await token_of(client, name, "new-password-2")
    assert await accepted(client, fresh) == 403  # valid, a customer's


async def test_an_admin_sets_a_users_password(client: httpx.AsyncClient) -> None:
    user_id, name, token = await customer(client)
    admin = await token_of(client, **ADMIN)
    body = {"newPassword": "given-by-admin"}
    assert (
        await client.post(f"/users/{user_id}/password", json=body, headers=bearer(token))
    ).status_code == 403
    missing = await client.post(f"/users/{uuid.uuid4()}/password", json=body, headers=bearer(admin))
    assert missing.status_code == 404
    assert (
        await client.post(f"/users/{user_id}/password", json=body, headers=bearer(admin))
    ).status_code == 204
    assert await accepted(client, token) == 401
    assert await accepted(client, await token_of(client, name, "given-by-admin")) == 403


async def test_a_disabled_user_cannot_log_in_and_their_tokens_are_refused(client: httpx.AsyncClient) -> None:
    user_id, name, token = await customer(client)
    admin_token = await token_of(client, **ADMIN)
    assert (await client.post(f"/users/{user_id}/disable", headers=bearer(token))).status_code == 403
    assert (await client.post(f"/users/{user_id}/disable", headers=bearer(admin_token))).status_code == 204
    assert await accepted(client, token) == 401
    refused = await client.post("/login", json={"username": name, "password": PASSWORD})
    assert (refused.status_code, refused.json()["error"]) == (403, "this account is disabled")
    wrong = await client.post("/login", json={"username": name, "password": "wrong-password"})
    assert wrong.status_code == 401  # a wrong password learns nothing about the account
    users = (await client.get("/users", headers=bearer(admin_token))).json()["users"]
    assert {u["id"]: u["disabled"] for u in users}[user_id] is True

    assert (await client.post(f"/users/{user_id}/enable", headers=bearer(admin_token))).status_code == 204
    assert await accepted(client, token) == 401  # what the disable revoked stays revoked
    assert await accepted(client, await token_of(client, name, PASSWORD)) == 403


async def test_an_admin_cannot_disable_themselves(client: httpx.AsyncClient) -> None:
    admin_token = await token_of(client, **ADMIN)
    users = (await client.get("/users", headers=bearer(admin_token))).json()["users"]
    me = next(u["id"] for u in users if u["username"] == ADMIN["username"])
    assert (await client.post(f"/users/{me}/disable", headers=bearer(admin_token))).status_code == 409
    assert (
        await client.post(f"/users/{uuid.uuid4()}/disable", headers=bearer(admin_token))
    ).status_code == 404


async def test_a_token_whose_claims_do_not_fit_is_401_never_500(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    key = SigningKey.load_or_create(settings.key_file)
    now = int(time.time())
    claims = {"username": "x", "role": "admin", "iat": now, "exp": now + 60, "iss": "oms-auth", "aud": "oms"}
    for sub, jti in (("not-a-uuid", "j"), ("", "j"), (str(uuid.uuid4()), 5)):
        token = key.sign({**claims, "sub": sub, "jti": jti})
        assert (await client.get("/users", headers=bearer(token))).status_code == 401
        assert (await client.post("/logout", headers=bearer(token))).status_code == 401


async def test_the_revocations_are_for_services_holding_the_key(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    admin = await token_of(client, **ADMIN)
    for headers in ({}, {SERVICE_KEY_HEADER: "guess"}, bearer(admin)):
        assert (await client.get("/revocations", headers=headers)).status_code == 401
    key = {SERVICE_KEY_HEADER: read_or_create(settings.service_key).decode()}
    before = (await client.get("/revocations", headers=key)).json()
    await client.post("/logout", headers=bearer(admin))
    after = (await client.get("/revocations", params={"after": before["cursor"]}, headers=key)).json()
    assert [r["tokenId"] is not None for r in after["revocations"]] == [True]
    assert after["cursor"] == after["revocations"][0]["seq"] > before["cursor"]
    assert "/revocations" not in (await client.get("/openapi.json")).json()["paths"]


async def test_another_replica_refuses_a_signed_out_token_within_seconds(settings: Settings) -> None:
    async with auth_client(settings) as one, auth_client(settings) as other:
        token = await token_of(one, **ADMIN)
        assert await accepted(other, token) == 200
        assert (await one.post("/logout", headers=bearer(token))).status_code == 204
        started = time.monotonic()
        while await accepted(other, token) != 401:
            assert time.monotonic() - started < 5, "the other replica still accepts the token"
            await asyncio.sleep(0.05)


async def test_revocations_are_listed_in_commit_order(settings: Settings) -> None:
    """A revocation that takes its seq while another is uncommitted waits for it, so a follower that has
    read up to some seq never misses an earlier one committing later."""
    user_id = uuid.UUID((await _user_ids(settings))[0])
    expires = _later()
    first = await asyncpg.connect(settings.database_url("auth"))
    second = await asyncpg.connect(settings.database_url("auth"))
    try:
        transaction = first.transaction()
        await transaction.start()
        await store.revoke_token(first, user_id, "first", expires)
        late = asyncio.create_task(_revoke_alone(second, user_id, "second"))
        await asyncio.sleep(0.5)
        assert not late.done()  # waits for the first to commit
        await transaction.commit()
        await asyncio.wait_for(late, 10)
        page, _ = await store.revocations_page(first, 0, 1000)
        assert [r.token_id for r in page if r.token_id in ("first", "second")] == ["first", "second"]
    finally:
        await first.close()
        await second.close()


async def _revoke_alone(conn: asyncpg.Connection, user_id: uuid.UUID, token_id: str) -> None:
    async with conn.transaction():
        await store.revoke_token(conn, user_id, token_id, _later())


def _later() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


async def _user_ids(settings: Settings) -> list[str]:
    conn = await asyncpg.connect(settings.database_url("auth"))
    try:
        return [str(r["id"]) for r in await conn.fetch("SELECT id FROM users")]
    finally:
        await conn.close()
