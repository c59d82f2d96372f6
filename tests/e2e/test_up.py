"""`oms up` end to end: the running system over HTTP, restarts, stops, and start-up refusals."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi import FastAPI

from oms.kernel.errors import install_error_handlers
from oms.kernel.tokens import AdminUser, CurrentUser, JwksKeys, TokenVerifier
from oms.runtime.nats import EmbeddedNats
from tests.conftest import execute
from tests.e2e.conftest import RunningSystem, system_env

pytestmark = pytest.mark.e2e


def login(system: RunningSystem, username: str, password: str) -> httpx.Response:
    return httpx.post(f"{system.url('auth')}/login", json={"username": username, "password": password})


def test_up_serves_health_register_login_and_admin_users(system: RunningSystem) -> None:
    assert httpx.get(f"{system.url('auth')}/health").json()["status"] == "ok"
    created = httpx.post(
        f"{system.url('auth')}/register", json={"username": "ivan", "password": "ivan-password"}
    )
    assert created.status_code == 201
    assert login(system, "ivan", "ivan-password").status_code == 200
    admin_token = login(system, "boss", "boss-password").json()["token"]
    users = httpx.get(f"{system.url('auth')}/users", headers={"Authorization": f"Bearer {admin_token}"})
    assert {"ivan", "boss"} <= {u["username"] for u in users.json()["users"]}


def test_up_prints_urls_and_admin_login(system: RunningSystem) -> None:
    text = "".join(system.output)
    assert system.url("auth") in text
    assert "Admin login: boss / boss-password" in text


def judy_and_boss_tokens(system: RunningSystem) -> tuple[str, str]:
    httpx.post(f"{system.url('auth')}/register", json={"username": "judy", "password": "judy-password"})
    customer = login(system, "judy", "judy-password").json()["token"]
    return customer, login(system, "boss", "boss-password").json()["token"]


async def test_other_services_verify_tokens_with_the_jwks_only(system: RunningSystem) -> None:
    """A service that knows only the JWKS URL accepts auth's tokens and refuses wrong roles."""
    app = FastAPI()
    install_error_handlers(app)
    app.state.token_verifier = TokenVerifier(
        JwksKeys(f"{system.url('auth')}/.well-known/jwks.json"), "oms-auth", "oms"
    )

    @app.get("/me")
    async def me(user: CurrentUser) -> dict[str, str]:
        return {"username": user.username, "role": user.role.value}

    @app.get("/admin")
    async def admin(user: AdminUser) -> dict[str, str]:
        return {"username": user.username}

    customer, admin_token = judy_and_boss_tokens(system)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        auth = {"Authorization": f"Bearer {customer}"}
        assert (await client.get("/me", headers=auth)).json() == {"username": "judy", "role": "customer"}
        assert (await client.get("/admin", headers=auth)).status_code == 403
        assert (await client.get("/me")).status_code == 401
        assert (await client.get("/me", headers={"Authorization": "Bearer x.y.z"})).status_code == 401
        admin_headers = {"Authorization": f"Bearer {admin_token}"}
        assert (await client.get("/admin", headers=admin_headers)).json() == {"username": "boss"}


def test_up_restarts_a_crashed_service(system: RunningSystem) -> None:
    auth = next(p for p in system.descendants if "serve" in p.cmdline() and "auth" in p.cmdline())
    auth.kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{system.url('auth')}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        pytest.fail("auth was not restarted")
    assert "auth exited with code -9; restarting" in "".join(system.output)
    system.descendants = psutil.Process(system.process.pid).children(recursive=True)  # type: ignore[union-attr]


def test_second_up_on_the_same_data_dir_is_refused(system: RunningSystem) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "oms", "up", "--data-dir", str(system.data_dir)],
        env=system_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "already running" in result.stderr


def test_logs_never_contain_passwords_or_tokens(system: RunningSystem) -> None:
    token = login(system, "boss", "boss-password").json()["token"]
    httpx.get(f"{system.url('auth')}/users", headers={"Authorization": f"Bearer {token}"})
    httpx.post(f"{system.url('auth')}/login", json={"username": "boss", "password": "wrong-password-x"})
    logs = "".join(p.read_text() for p in (system.data_dir / "logs").glob("*.log"))
    assert '"component": "auth"' in logs
    for secret in ("boss-password", "wrong-password-x", "ivan-password", token, token.split(".")[2]):
        assert secret not in logs


def test_stop_leaves_no_process_and_restart_finds_all_data(system: RunningSystem) -> None:
    httpx.post(f"{system.url('auth')}/register", json={"username": "kate", "password": "kate-password"})
    assert system.stop(signal.SIGTERM) == 0
    assert system.leftovers() == []
    assert "stopped" in "".join(system.output)

    system.start(background=True)  # as `oms up &` from a shell: SIGINT ignored, and it must still stop it
    assert login(system, "kate", "kate-password").status_code == 200
    assert system.stop(signal.SIGINT) == 0
    assert system.leftovers() == []


def test_up_with_a_taken_port_stops_with_one_line_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = system_env(OMS_AUTH_PORT=str(port))
        result = subprocess.run(
            [sys.executable, "-m", "oms", "up", "--data-dir", str(tmp_path / "d")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"port {port}" in lines[0] and "OMS_AUTH_PORT" in lines[0]
    assert not (tmp_path / "d" / "pg").exists()


def test_admin_create_works_with_and_without_a_running_system(tmp_path: Path) -> None:
    running = RunningSystem(tmp_path / "data", system_env())

    def admin_create(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "oms", "admin", "create", name, "--data-dir", str(running.data_dir)],
            env={**running.env, "OMS_NEW_ADMIN_PASSWORD": f"{name}-password"},
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert admin_create("offline-admin").returncode == 0
    running.start()
    try:
        assert admin_create("online-admin").returncode == 0
        duplicate = admin_create("online-admin")
        assert duplicate.returncode == 1
        assert duplicate.stderr.strip() == "oms: username already taken"
        for name in ("offline-admin", "online-admin"):
            token = login(running, name, f"{name}-password").json()["token"]
            users = httpx.get(f"{running.url('auth')}/users", headers={"Authorization": f"Bearer {token}"})
            assert users.status_code == 200
    finally:
        running.stop()
    assert running.leftovers() == []


def test_up_external_uses_the_configured_servers(
    tmp_path: Path, make_database: Callable[[str], str], nats_server: EmbeddedNats
) -> None:
    urls = {f"OMS_{name.upper()}_DATABASE_URL": make_database(name) for name in ("auth", "order", "account")}
    running = RunningSystem(tmp_path / "data", system_env(**urls, OMS_NATS_URL=nats_server.url))
    running.start("--external")
    try:
        assert login(running, "boss", "boss-password").status_code == 200
        assert "PostgreSQL" not in "".join(running.output)
        assert not (running.data_dir / "pg").exists()
        assert execute(urls["OMS_AUTH_DATABASE_URL"], "SELECT username FROM users") == [("boss",)]
    finally:
        running.stop()
    assert running.leftovers() == []
