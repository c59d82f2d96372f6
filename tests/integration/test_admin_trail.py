"""The admin trail at the auth service, on a real PostgreSQL database: auth records its own admin actions in
their transaction, admins add theirs as themselves only, entries page both ways and are counted, and no row
can be changed or removed — not even by the service's own database role."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import pytest

from oms.kernel.settings import Settings
from tests.integration.auth_service import ADMIN, auth_client, bearer, make_settings, token_of


@pytest.fixture(scope="module")
def settings(make_database: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(make_database("auth"), tmp_path_factory.mktemp("data"))


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with auth_client(settings) as c:
        yield c


async def trail(client: httpx.AsyncClient, token: str, **params: str) -> dict[str, object]:
    answer = await client.get("/admin-trail", params=params, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    found: dict[str, object] = answer.json()
    return found


async def test_auth_records_its_own_admin_actions_with_who_and_whom(client: httpx.AsyncClient) -> None:
    admin = await token_of(client, **ADMIN)
    name = f"c-{uuid.uuid4().hex[:10]}"
    created = await client.post(
        "/register", json={"username": name, "password": "password-1"}, headers=bearer(admin)
    )
    user_id = created.json()["id"]
    for path, body in (
        (f"/users/{user_id}/disable", None),
        (f"/users/{user_id}/enable", None),
        (f"/users/{user_id}/password", {"newPassword": "password-2"}),
    ):
        assert (await client.post(path, json=body, headers=bearer(admin))).status_code == 204
    page = await trail(client, admin, who=name)
    entries = page["entries"]
    assert isinstance(entries, list)
    assert [(e["action"], e["actorName"], e["targetId"], e["targetName"]) for e in entries] == [
        (action, ADMIN["username"], user_id, name)
        for action in ("reset password", "enable user", "disable user", "create user")
    ]
    assert "password-2" not in str(entries)
    count = await client.get("/admin-trail/count", params={"who": name}, headers=bearer(admin))
    assert count.json() == {"count": 4, "atLeast": False}
    self_registered = f"c-{uuid.uuid4().hex[:10]}"
    await client.post("/register", json={"username": self_registered, "password": "password-1"})
    assert (await trail(client, admin, who=self_registered))["entries"] == []  # no admin did anything


async def test_an_admin_adds_entries_only_as_themselves_and_customers_not_at_all(
    client: httpx.AsyncClient,
) -> None:
    admin = await token_of(client, **ADMIN)
    entry = {
        "action": "deposit",
        "targetKind": "customer",
        "targetId": str(uuid.uuid4()),
        "targetName": "ayse",
        "detail": "Deposited 10.00 TRY for ayse.",
        "actorName": "somebody-else",  # ignored: the actor is the token's user
    }
    added = await client.post("/admin-trail", json=entry, headers=bearer(admin))
    assert added.status_code == 201
    found = (await trail(client, admin, who=entry["targetId"]))["entries"]
    assert [(e["actorName"], e["detail"]) for e in found] == [(ADMIN["username"], entry["detail"])]  # type: ignore[attr-defined]
    for bad in ({**entry, "detail": "nul\x00"}, {**entry, "action": ""}, {**entry, "detail": "x" * 501}):
        refused = await client.post("/admin-trail", json=bad, headers=bearer(admin))
        assert refused.status_code == 422 and refused.json()["error"]
    nul = await client.get("/admin-trail", params={"who": "a\x00"}, headers=bearer(admin))
    assert nul.status_code == 422
    name = f"c-{uuid.uuid4().hex[:10]}"
    await client.post("/register", json={"username": name, "password": "password-1"})
    customer = await token_of(client, name, "password-1")
    assert (await client.post("/admin-trail", json=entry, headers=bearer(customer))).status_code == 403
    assert (await client.get("/admin-trail", headers=bearer(customer))).status_code == 403
    assert (await client.post("/admin-trail", json=entry)).status_code == 401


async def test_entries_page_both_ways(client: httpx.AsyncClient) -> None:
    admin = await token_of(client, **ADMIN)
    target = str(uuid.uuid4())
    for n in range(7):
        entry = {"action": "deposit", "targetKind": "customer", "targetId": target, "detail": f"entry {n}"}
        assert (await client.post("/admin-trail", json=entry, headers=bearer(admin))).status_code == 201

    def details(page: dict[str, object]) -> list[str]:
        return [e["detail"] for e in page["entries"]]  # type: ignore[attr-defined]

    first = await trail(client, admin, who=target, limit="3")
    assert details(first) == ["entry 6", "entry 5", "entry 4"] and first["prevCursor"] is None
    second = await trail(client, admin, who=target, limit="3", cursor=str(first["nextCursor"]))
    third = await trail(client, admin, who=target, limit="3", cursor=str(second["nextCursor"]))
    assert details(third) == ["entry 0"] and third["nextCursor"] is None
    back = await trail(client, admin, who=target, limit="3", before=str(third["prevCursor"]))
    assert details(back) == details(second) == ["entry 3", "entry 2", "entry 1"]
    top = await trail(client, admin, who=target, limit="3", before=str(back["prevCursor"]))
    assert details(top) == details(first) and top["prevCursor"] is None
    reversed_days = await client.get(
        "/admin-trail",
        params={"startDate": "2030-01-02", "endDate": "2030-01-01"},
        headers=bearer(admin),
    )
    assert reversed_days.status_code == 422


async def test_no_entry_can_be_changed_or_removed(settings: Settings, client: httpx.AsyncClient) -> None:
    admin = await token_of(client, **ADMIN)
    entry = {"action": "deposit", "targetKind": "customer", "targetId": "x", "detail": "kept"}
    await client.post("/admin-trail", json=entry, headers=bearer(admin))
    conn = await asyncpg.connect(settings.auth_database_url)
    try:
        for statement in (
            "UPDATE admin_trail SET detail = 'changed'",
            "DELETE FROM admin_trail",
            "TRUNCATE admin_trail",
        ):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(statement)
        assert await conn.fetchval("SELECT count(*) FROM admin_trail WHERE detail = 'kept'") == 1
    finally:
        await conn.close()
