"""Back-office sessions: the encrypted cookie, its key, and CSRF on every POST route (in-process app)."""

from __future__ import annotations

import re
import stat
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from oms.backoffice.app import create_app
from oms.backoffice.headers import HEADERS
from oms.backoffice.sessions import COOKIE, Login, SessionCodec, new_session, session_key
from oms.kernel.settings import Settings
from oms.kernel.tokens import Role

# Made when the suite is collected, and used after the e2e tests ran (10 minutes and more): valid for a day.
LOGIN = Login("header.claims.signature", "u-1", "alice", Role.CUSTOMER, time.time() + 86_400)


def test_a_session_survives_the_cookie_round_trip() -> None:
    codec = SessionCodec(Fernet.generate_key())
    session = new_session(LOGIN)
    text = codec.encode(session)
    assert LOGIN.token not in text  # encrypted, not merely signed
    assert codec.decode(text) == session
    assert codec.decode(text).signed_in == LOGIN  # type: ignore[union-attr]


def test_a_tampered_or_foreign_cookie_is_no_session() -> None:
    codec = SessionCodec(Fernet.generate_key())
    text = codec.encode(new_session(LOGIN))
    assert codec.decode(text[:-4] + "AAAA") is None
    assert SessionCodec(Fernet.generate_key()).decode(text) is None
    assert codec.decode("not a cookie") is None


def test_an_expired_login_is_signed_out() -> None:
    expired = Login("t", "u-1", "alice", Role.CUSTOMER, time.time() - 1)
    assert new_session(expired).signed_in is None


def test_the_session_key_is_created_once_and_kept_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    key = session_key(settings)
    path = settings.secrets_dir / "backoffice-session.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert session_key(settings) == key
    assert list(settings.secrets_dir.iterdir()) == [path]  # no temporary file left behind
    assert session_key(Settings(data_dir=tmp_path, backoffice_session_key="configured")) == b"configured"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    # No service runs: a refused POST must be refused before the back office calls any of them.
    settings = Settings(data_dir=tmp_path, auth_url="http://127.0.0.1:9", order_url="http://127.0.0.1:9")
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bo") as http,
    ):
        http.post_paths = [path for path, ops in app.openapi()["paths"].items() if "post" in ops]  # type: ignore[attr-defined]
        yield http


def _filled(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: {"service": "order", "seq": "1"}.get(m[1], str(uuid.uuid4())), path)


async def test_every_post_route_refuses_a_request_without_the_sessions_csrf_token(
    client: httpx.AsyncClient,
) -> None:
    posts: list[str] = client.post_paths  # type: ignore[attr-defined]
    assert len(posts) >= 10
    page = await client.get("/login")
    assert page.status_code == 200 and COOKIE in page.cookies
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]  # type: ignore[index]
    for path in posts:
        for form in ({}, {"csrf_token": "forged"}, {"csrf_token": token + "x"}):
            response = await client.post(_filled(path), data=form)
            assert response.status_code == 403, (path, form, response.text[:200])
    # With the token the form is let through (here to the auth service, which is not running).
    through = await client.post("/login", data={"csrf_token": token, "username": "a", "password": "b"})
    assert through.status_code == 503 and "the auth service cannot be reached" in through.text


async def test_pages_need_a_signed_in_user_and_say_where_to_come_back(client: httpx.AsyncClient) -> None:
    response = await client.get("/orders?status=PENDING")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Forders%3Fstatus%3DPENDING"
    htmx = await client.get("/balances", headers={"HX-Request": "true"})
    assert htmx.headers["HX-Redirect"].startswith("/login")
    assert (await client.get("/static/htmx.min.js")).status_code == 200  # served here, no CDN


async def test_every_answer_carries_the_security_headers_errors_included(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auth_url="http://127.0.0.1:9")
    app = create_app(settings)

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bo") as http,
    ):
        answers = [
            await http.get("/login"),
            await http.get("/static/app.css"),
            await http.get("/no-such-page"),
            await http.get("/boom"),
            await http.post("/login", content=b"x" * 70_000),
        ]
    assert [a.status_code for a in answers] == [200, 200, 404, 500, 413]
    for answer in answers:
        assert {k: answer.headers.get(k) for k in HEADERS} == HEADERS, answer.request.url
