"""`oms up` end to end: the running system over HTTP, restarts, stops, and start-up refusals."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi import FastAPI

from oms.kernel.errors import install_error_handlers
from oms.kernel.revocation import Revocations, following_auth
from oms.kernel.settings import SERVICES, Settings
from oms.kernel.tokens import AdminUser, CurrentUser, verifier_for
from oms.runtime.nats import EmbeddedNats
from oms.runtime.ports import free_port
from oms.runtime.postgres import EmbeddedPostgres
from oms.runtime.roles import connections, env_name
from tests.conftest import execute
from tests.e2e.conftest import RunningSystem, system_env

pytestmark = [pytest.mark.e2e, pytest.mark.long]


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


def test_every_service_is_live_and_ready_without_a_token(system: RunningSystem) -> None:
    for component in ("auth", "order", "account", "market", "backoffice"):
        assert httpx.get(f"{system.url(component)}/livez").json() == {"status": "ok"}
        ready = httpx.get(f"{system.url(component)}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ok" and set(ready.json()["checks"].values()) == {"ok"}


def test_up_prints_urls_and_admin_login(system: RunningSystem) -> None:
    text = "".join(system.output)
    assert system.url("auth") in text
    assert "Admin login: boss / (the password in OMS_ADMIN_PASSWORD)" in text
    assert "boss-password" not in text  # this output is often kept in a log file


def judy_and_boss_tokens(system: RunningSystem) -> tuple[str, str]:
    httpx.post(f"{system.url('auth')}/register", json={"username": "judy", "password": "judy-password"})
    customer = login(system, "judy", "judy-password").json()["token"]
    return customer, login(system, "boss", "boss-password").json()["token"]


async def test_other_services_verify_tokens_with_the_jwks_only(system: RunningSystem) -> None:
    """A service that knows only auth's URL (its JWKS, its revocations) and the services' key accepts auth's
    tokens and refuses wrong roles: it holds no secret that could sign one."""
    app = FastAPI()
    install_error_handlers(app)
    settings = Settings(auth_url=system.url("auth"), data_dir=system.data_dir)
    revocations = Revocations(max_staleness=30)
    app.state.token_verifier = verifier_for(settings, revocations)

    @app.get("/me")
    async def me(user: CurrentUser) -> dict[str, str]:
        return {"username": user.username, "role": user.role.value}

    @app.get("/admin")
    async def admin(user: AdminUser) -> dict[str, str]:
        return {"username": user.username}

    customer, admin_token = judy_and_boss_tokens(system)
    transport = httpx.ASGITransport(app=app)
    async with (
        following_auth(settings, revocations),
        httpx.AsyncClient(transport=transport, base_url="http://svc") as client,
    ):
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


def component_of(argv: list[str]) -> str | None:
    """`auth`, …, `relay-order` for an `oms serve …` command line; None for another."""
    if "serve" not in argv:
        return None
    args = argv[argv.index("serve") + 1 :]
    return f"relay-{args[-1]}" if args[0] == "relay" else args[0]


def test_each_child_is_given_only_its_own_database_roles(system: RunningSystem) -> None:
    """A service gets its own role's URL, a relay its replication role's, the back office only the audit's
    read-only ones: no service's or superuser's URL or password is in its environment."""
    assert system.process is not None
    environments = {
        component_of(child.cmdline()): child.environ()
        for child in psutil.Process(system.process.pid).children(recursive=True)
        if child.status() != psutil.STATUS_ZOMBIE and component_of(child.cmdline())
    }
    assert {
        name: sorted(k for k in env if k.endswith("_DATABASE_URL")) for name, env in environments.items()
    } == {
        "auth": ["OMS_AUTH_DATABASE_URL"],
        "order": ["OMS_ORDER_DATABASE_URL"],
        "account": ["OMS_ACCOUNT_DATABASE_URL"],
        "market": ["OMS_MARKET_DATABASE_URL"],
        "backoffice": ["OMS_AUDIT_ACCOUNT_DATABASE_URL", "OMS_AUDIT_ORDER_DATABASE_URL"],
        "relay-order": ["OMS_ORDER_RELAY_DATABASE_URL"],
        "relay-account": ["OMS_ACCOUNT_RELAY_DATABASE_URL"],
    }
    backoffice = "\n".join(environments["backoffice"].values())
    for secret in (system.data_dir / "secrets").glob("pg-*password"):
        given = secret.read_text().strip() in backoffice
        assert given == (secret.name == "pg-audit-password"), secret.name


def test_stop_leaves_no_process_and_restart_finds_all_data(system: RunningSystem) -> None:
    httpx.post(f"{system.url('auth')}/register", json={"username": "kate", "password": "kate-password"})
    assert system.stop(signal.SIGTERM) == 0
    assert system.leftovers() == []
    assert "stopped" in "".join(system.output)

    system.start(background=True)  # as `oms up &` from a shell: SIGINT ignored, and it must still stop it
    assert login(system, "kate", "kate-password").status_code == 200
    assert system.stop(signal.SIGINT) == 0
    assert system.leftovers() == []


def test_sigint_stops_it_also_when_started_in_the_background(tmp_path: Path) -> None:
    running = RunningSystem(tmp_path / "data", system_env())
    running.start(background=True)
    assert running.stop(signal.SIGINT) == 0
    assert running.leftovers() == []


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


def provision_external(server: EmbeddedPostgres, admin_dir: Path) -> dict[str, str]:
    """`oms db provision` on `server`, as an operator of external servers runs it: the settings it prints."""
    result = subprocess.run(
        [sys.executable, "-m", "oms", "db", "provision", "--data-dir", str(admin_dir)],
        env={**system_env(), "OMS_PG_ADMIN_URL": server.url()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_up_external_uses_the_configured_servers_and_roles(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    server = EmbeddedPostgres(tmp_path / "external-pg", free_port())
    server.start()
    try:
        urls = provision_external(server, tmp_path / "operator")
        assert sorted(urls) == sorted(env_name(c.name) for c in connections())
        nats = {"OMS_NATS_URL": nats_server.url, "OMS_NATS_IDENTITIES_DIR": str(nats_server.identities)}
        running = RunningSystem(tmp_path / "data", system_env(**urls, **nats))
        running.start("--external")
        try:
            assert login(running, "boss", "boss-password").status_code == 200
            assert "PostgreSQL" not in "".join(running.output)
            assert not (running.data_dir / "pg").exists()
            assert execute(urls["OMS_AUTH_DATABASE_URL"], "SELECT username FROM users") == [("boss",)]
            assert execute(urls["OMS_ORDER_DATABASE_URL"], "SELECT count(*) FROM orders") == [(0,)]
        finally:
            running.stop()
        assert running.leftovers() == []
    finally:
        server.stop()


def test_up_external_without_the_relay_and_audit_urls_stops_with_one_line(tmp_path: Path) -> None:
    urls = {env_name(s): f"postgresql://u:p@127.0.0.1:1/{s}" for s in SERVICES}
    result = subprocess.run(
        [sys.executable, "-m", "oms", "up", "--external", "--data-dir", str(tmp_path / "d")],
        env=system_env(**urls),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "oms: no database configured for order relay: set OMS_ORDER_RELAY_DATABASE_URL"
        " (`oms db provision` makes the roles and prints every URL)"
    ]
