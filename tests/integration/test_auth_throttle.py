"""Login and registration throttling, tried as an attacker would: spoofed X-Forwarded-For, guesses from other
addresses meant to lock the owner out, a busy shared address, and the back office's vouched address — against
auth served by real uvicorn (as `oms serve` configures it) or in-process, on a real PostgreSQL database."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from oms.auth.app import create_app
from oms.kernel import client_address
from oms.kernel.secret_file import read_or_create
from oms.kernel.settings import Settings
from tests.integration.auth_service import ADMIN, auth_client, bearer, make_settings, token_of
from tests.integration.served import client_from, served

WRONG = {**ADMIN, "password": "not-the-password"}
ADMIN_ADDRESS = "127.0.0.3"


@pytest.fixture
def settings_for(make_database: Callable[[str], str], tmp_path: Path) -> Callable[..., Settings]:
    """Settings of a fresh auth database (every test counts from zero), with these overrides."""

    def make(**overrides: object) -> Settings:
        return make_settings(make_database("auth"), tmp_path, **overrides)

    return make


async def statuses(client: httpx.AsyncClient, attempts: list[dict[str, str]], **kwargs: object) -> list[int]:
    return [(await client.post("/login", json=body, **kwargs)).status_code for body in attempts]  # type: ignore[arg-type]


async def test_spoofed_x_forwarded_for_does_not_spread_guesses_over_addresses(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for(login_address_max_failures=10)
    guesses = [{"username": f"user{i}", "password": "password-1"} for i in range(15)]
    async with served(create_app(settings), settings) as url, client_from(url, "127.0.0.1") as attacker:
        found = [
            (await attacker.post("/login", json=g, headers={"X-Forwarded-For": f"203.0.113.{i}"})).status_code
            for i, g in enumerate(guesses)
        ]
    assert found == [401] * 10 + [429] * 5  # one address, 127.0.0.1, whatever the header says


async def test_spoofed_failures_for_a_user_do_not_lock_out_the_real_user(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for()
    async with served(create_app(settings), settings) as url:
        async with client_from(url, "127.0.0.2") as attacker:
            spoofed = {"X-Forwarded-For": ADMIN_ADDRESS}
            assert await statuses(attacker, [WRONG] * 6, headers=spoofed) == [401] * 5 + [429]
        async with client_from(url, ADMIN_ADDRESS) as admin:
            assert (await admin.post("/login", json=ADMIN)).status_code == 200


async def test_failures_from_other_addresses_never_refuse_the_correct_password_from_a_clean_address(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for()
    async with served(create_app(settings), settings) as url:
        for address in ("127.0.0.2", "127.0.0.4", "127.0.0.5"):
            async with client_from(url, address) as attacker:
                assert await statuses(attacker, [WRONG] * 5) == [401] * 5
        async with client_from(url, ADMIN_ADDRESS) as admin:
            assert (await admin.post("/login", json=ADMIN)).status_code == 200
        async with client_from(url, "127.0.0.2") as attacker:  # that address still waits
            assert (await attacker.post("/login", json=ADMIN)).status_code == 429


async def test_a_success_clears_the_users_failures(settings_for: Callable[..., Settings]) -> None:
    async with auth_client(settings_for(login_address_max_failures=6)) as client:
        assert await statuses(client, [WRONG] * 4 + [ADMIN]) == [401] * 4 + [200]
        # Neither the user's count nor the address's still holds those four.
        assert await statuses(client, [WRONG] * 4 + [ADMIN]) == [401] * 4 + [200]


async def test_an_honest_login_on_a_busy_address_does_not_lock_it(
    settings_for: Callable[..., Settings],
) -> None:
    """A shared address (an office, a back office without vouching) one failure short of its limit: the
    correct password gets in, and does not leave the address locked for the next person."""
    async with auth_client(settings_for(login_address_max_failures=5)) as client:
        await client.post("/register", json={"username": "carol", "password": "carol-password"})
        typos = [{"username": f"typo{i}", "password": "password-1"} for i in range(4)]
        assert await statuses(client, typos) == [401] * 4
        assert await statuses(client, [ADMIN, {"username": "carol", "password": "carol-password"}]) == [
            200,
            200,
        ]


async def test_x_forwarded_for_is_believed_from_a_trusted_proxy_only(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for(trusted_proxies="127.0.0.4")
    async with served(create_app(settings), settings) as url:
        async with client_from(url, "127.0.0.4") as proxy:
            attacker, owner = {"X-Forwarded-For": "198.51.100.1"}, {"X-Forwarded-For": "198.51.100.2"}
            assert await statuses(proxy, [WRONG] * 5, headers=attacker) == [401] * 5
            assert (await proxy.post("/login", json=ADMIN, headers=attacker)).status_code == 429
            assert (await proxy.post("/login", json=ADMIN, headers=owner)).status_code == 200
        async with client_from(url, "127.0.0.5") as untrusted:  # counted as 127.0.0.5
            assert await statuses(untrusted, [WRONG] * 5, headers=owner) == [401] * 5
        async with client_from(url, "127.0.0.4") as proxy:
            assert (await proxy.post("/login", json=ADMIN, headers=owner)).status_code == 200


def _vouched(
    settings: Settings, address: str, key: bytes | None = None, at: float | None = None
) -> dict[str, str]:
    signed = client_address.vouch(
        key or read_or_create(settings.client_address_key), address, at or time.time()
    )
    return {client_address.HEADER: signed}


async def test_the_back_offices_vouched_address_is_believed_and_a_forged_one_is_not(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for()
    async with auth_client(settings, address="10.0.0.9") as back_office:
        browser, owner = _vouched(settings, "198.51.100.7"), _vouched(settings, "198.51.100.8")
        assert await statuses(back_office, [WRONG] * 5, headers=browser) == [401] * 5
        assert (await back_office.post("/login", json=ADMIN, headers=browser)).status_code == 429
        assert (await back_office.post("/login", json=ADMIN, headers=owner)).status_code == 200
        # Not believed: another key, an old signature, a changed address. They count against the peer.
        forged = [
            _vouched(settings, "198.51.100.20", key=b"guessed key"),
            _vouched(settings, "198.51.100.21", at=time.time() - 3600),
            {client_address.HEADER: browser[client_address.HEADER].replace("198.51.100.7", "198.51.100.22")},
        ]
        for headers in forged:
            assert (await back_office.post("/login", json=WRONG, headers=headers)).status_code == 401
        assert await statuses(back_office, [WRONG] * 3) == [401, 401, 429]  # the peer's 4th, 5th, 6th


async def test_registration_is_limited_per_address_with_retry_after(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for(register_address_max_attempts=3)

    def new_user(i: int) -> dict[str, str]:
        return {"username": f"new-user-{i}", "password": "password-1"}

    async with auth_client(settings, address="192.0.2.1") as flood:
        assert (await flood.post("/register", json={"username": "x", "password": "p"})).status_code == 422
        found = [await flood.post("/register", json=new_user(i)) for i in range(5)]
        assert [r.status_code for r in found] == [201, 201, 201, 429, 429]
        assert 0 < int(found[-1].headers["Retry-After"]) <= 60
        admin = await token_of(flood, **ADMIN)
        by_admin = await flood.post("/register", json=new_user(9), headers=bearer(admin))
        assert by_admin.status_code == 201  # admins creating users are not counted
    async with auth_client(settings, address="192.0.2.2") as someone_else:
        assert (await someone_else.post("/register", json=new_user(10))).status_code == 201
