"""Who may do what, on every endpoint of the order, account and auth services, over real HTTP.

The matrix: each endpoint acting on one customer's (the owner's) data, called by the owner ("self"), by
another customer ("other"), by an admin, without a token, and with tokens that must not be accepted
(garbage, expired, signed by another Ed25519 key). Refused requests must change nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oms.auth.keys import SigningKey
from tests.e2e.api import Api, User, exact
from tests.e2e.conftest import RunningSystem, system_env

pytestmark = pytest.mark.e2e

D = Decimal
IBAN = "TR33 0006 1005 1978 6457 8413 26"


# --- tokens ------------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(user: User, role: str, **override: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": user.id,
        "username": user.username,
        "role": role,
        "iat": now,
        "exp": now + 600,
        "iss": "oms-auth",
        "aud": "oms",
        "jti": str(uuid.uuid4()),
    }
    claims.update(override)
    return claims


@dataclass
class Tokens:
    """Tokens the services must refuse, and one they must accept (the control: the real key, valid claims,
    so that each refusal is caused by what is wrong with its token and nothing else)."""

    real_key: SigningKey
    victim: User

    def real(self, **override: Any) -> str:
        return self.real_key.sign({**claims_for(self.victim, "admin"), **override})

    def bad(self, kind: str) -> str:
        claims = claims_for(self.victim, "admin")  # each forgery asks for the most: admin
        if kind == "garbage":
            return "not.a-token.at-all"
        if kind == "expired":
            return self.real(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
        if kind == "forged":  # another Ed25519 key, presenting the real key's id
            impostor = Ed25519PrivateKey.generate()
            return jwt.encode(claims, impostor, algorithm="EdDSA", headers={"kid": self.real_key.kid})
        if kind == "unknown-key":
            return SigningKey(Ed25519PrivateKey.generate()).sign(claims)
        if kind == "alg-none":
            header = {"alg": "none", "typ": "JWT", "kid": self.real_key.kid}
            return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."
        if kind == "hs256-public-key":  # the classic confusion: HMAC keyed with the public key
            header = {"alg": "HS256", "typ": "JWT", "kid": self.real_key.kid}
            signed = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
            secret = json.dumps(self.real_key.public_jwk).encode()
            return f"{signed}.{_b64(hmac.new(secret, signed.encode(), hashlib.sha256).digest())}"
        if kind == "wrong-audience":
            return self.real(aud="someone-else")
        if kind == "wrong-issuer":
            return self.real(iss="evil-auth")
        if kind == "unknown-role":
            return self.real(role="superuser")
        if kind == "missing-jti":
            claims = claims_for(self.victim, "admin")
            del claims["jti"]
            return self.real_key.sign(claims)
        raise ValueError(kind)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the cast ----------------------------------------------------------------------------------------------


@dataclass
class Cast:
    api: Api
    admin: User
    owner: User  # whose data every request of the matrix is about
    intruder: User  # another customer
    owner_order: str  # one of the owner's orders (MATCHED)
    tokens: Tokens
    resting_price: str = (
        "0"  # a BUY limit in the band that the market does not cross (orders the matrix places)
    )


@pytest.fixture(scope="module")
def cast(system: RunningSystem) -> Iterator[Cast]:
    api = Api(system)
    admin, owner, intruder = api.admin(), api.customer(), api.customer()
    for customer in (owner, intruder):
        assert api.deposit(admin, customer, "TRY", "10000").status_code == 200
        assert api.deposit(admin, customer, "AAPL", "10").status_code == 200
    order_id = api.place(owner, "BUY", "AAPL", "1", api.marketable(owner, "BUY"))
    assert api.wait_order(owner, order_id)["status"] == "MATCHED"
    key = SigningKey.load_or_create(Path(system.data_dir) / "secrets" / "auth-ed25519.pem")
    yield Cast(api, admin, owner, intruder, order_id, Tokens(key, owner), api.resting(owner, "BUY"))


# --- the matrix --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    component: str
    path: Callable[[Cast], str]
    kwargs: Callable[[Cast], dict[str, Any]]
    expected: dict[str, int]  # by caller: self, other, admin (no token and bad tokens: always 401)


def _order_body(c: Cast) -> dict[str, Any]:
    return {
        "json": {
            "customerId": c.owner.id,
            "assetName": "AAPL",
            "orderSide": "BUY",
            "size": "1",
            "price": c.resting_price,
        }
    }


def _for_owner(c: Cast) -> dict[str, Any]:
    return {"params": {"customerId": c.owner.id}}


OWNER_OR_ADMIN = {"self": 200, "other": 403, "admin": 200}
ADMINS_ONLY = {"self": 403, "other": 403, "admin": 200}


ENDPOINTS = [
    Endpoint(
        "POST /api/v1/orders",
        "POST",
        "order",
        lambda c: "/api/v1/orders",
        _order_body,
        {"self": 200, "other": 403, "admin": 200},
    ),
    Endpoint(
        "GET /api/v1/orders",
        "GET",
        "order",
        lambda c: "/api/v1/orders",
        _for_owner,
        {"self": 200, "other": 403, "admin": 200},
    ),
    Endpoint(
        "GET /api/v1/orders/{id}",
        "GET",
        "order",
        lambda c: f"/api/v1/orders/{c.owner_order}",
        lambda c: {},
        {"self": 200, "other": 404, "admin": 200},
    ),
    # The owner's order is MATCHED: self and admin get past authorization and are refused for its status.
    Endpoint(
        "DELETE /api/v1/orders?orderId",
        "DELETE",
        "order",
        lambda c: "/api/v1/orders",
        lambda c: {"params": {"orderId": c.owner_order}},
        {"self": 409, "other": 404, "admin": 409},
    ),
    Endpoint(
        "POST /api/v1/orders/{id}/match",
        "POST",
        "order",
        lambda c: f"/api/v1/orders/{c.owner_order}/match",
        lambda c: {},
        {"self": 403, "other": 403, "admin": 409},
    ),
    Endpoint(
        "POST /api/v1/assets",
        "POST",
        "account",
        lambda c: "/api/v1/assets",
        lambda c: {
            "json": {"customerId": c.owner.id, "assetName": "TRY", "totalSize": "1", "usableSize": "1"}
        },
        {"self": 202, "other": 403, "admin": 200},  # a customer's deposit is a request
    ),
    Endpoint(
        "POST /api/v1/assets/withdraw",
        "POST",
        "account",
        lambda c: "/api/v1/assets/withdraw",
        lambda c: {"json": {"customerId": c.owner.id, "amount": "1", "iban": IBAN}},
        {"self": 200, "other": 403, "admin": 200},
    ),
    Endpoint(
        "GET /api/v1/assets",
        "GET",
        "account",
        lambda c: "/api/v1/assets",
        _for_owner,
        {"self": 200, "other": 403, "admin": 200},
    ),
    Endpoint(
        "GET /api/v1/deposits",
        "GET",
        "account",
        lambda c: "/api/v1/deposits",
        _for_owner,
        {"self": 200, "other": 403, "admin": 200},
    ),
    Endpoint(
        "GET /api/v1/withdrawals",
        "GET",
        "account",
        lambda c: "/api/v1/withdrawals",
        _for_owner,
        {"self": 200, "other": 403, "admin": 200},
    ),
    # No such request: an admin gets past authorization and finds nothing (test_money.py decides real ones).
    *(
        Endpoint(
            f"POST /api/v1/{kind}s/{{id}}/{verdict}",
            "POST",
            "account",
            lambda c, kind=kind, verdict=verdict: f"/api/v1/{kind}s/{uuid.UUID(int=7)}/{verdict}",
            lambda c: {},
            {"self": 403, "other": 403, "admin": 404},
        )
        for kind in ("deposit", "withdrawal")
        for verdict in ("approve", "reject")
    ),
    Endpoint(
        "GET /api/v1/ledger",
        "GET",
        "account",
        lambda c: "/api/v1/ledger",
        _for_owner,
        {"self": 200, "other": 403, "admin": 200},
    ),
    *(
        Endpoint(f"GET {path}", "GET", service, lambda c, path=path: path, _for_owner, OWNER_OR_ADMIN)
        for service, path in (
            ("order", "/api/v1/orders/count"),
            ("account", "/api/v1/ledger/count"),
            ("account", "/api/v1/deposits/count"),
            ("account", "/api/v1/withdrawals/count"),
        )
    ),
    *(
        Endpoint(f"GET {path}", "GET", "auth", lambda c, path=path: path, lambda c: {}, ADMINS_ONLY)
        for path in ("/admin-trail", "/admin-trail/count")
    ),
    Endpoint(
        "POST /admin-trail",
        "POST",
        "auth",
        lambda c: "/admin-trail",
        lambda c: {"json": {"action": "deposit", "targetKind": "customer", "targetId": "x", "detail": "d"}},
        {"self": 403, "other": 403, "admin": 201},
    ),
    Endpoint(
        "POST /register (role admin)",
        "POST",
        "auth",
        lambda c: "/register",
        lambda c: {
            "json": {"username": f"a-{uuid.uuid4().hex[:10]}", "password": "password-1", "role": "admin"}
        },
        {"self": 403, "other": 403, "admin": 201},
    ),
    Endpoint(
        "GET /users",
        "GET",
        "auth",
        lambda c: "/users",
        lambda c: {},
        {"self": 403, "other": 403, "admin": 200},
    ),
]

CALLERS = ["self", "other", "admin", "no token", "garbage", "expired", "forged"]
MATRIX = [
    pytest.param(
        endpoint,
        caller,
        endpoint.expected.get(caller, 401),
        id=f"{endpoint.name} | {caller}",
    )
    for endpoint in ENDPOINTS
    for caller in CALLERS
]


def headers_of(cast: Cast, caller: str) -> dict[str, str]:
    if caller == "self":
        return cast.owner.headers
    if caller == "other":
        return cast.intruder.headers
    if caller == "admin":
        return cast.admin.headers
    if caller == "no token":
        return {}
    return bearer(cast.tokens.bad(caller))


def send(cast: Cast, endpoint: Endpoint, headers: dict[str, str]) -> httpx.Response:
    return cast.api.call(
        endpoint.method, endpoint.component, endpoint.path(cast), headers=headers, **endpoint.kwargs(cast)
    )


@pytest.mark.parametrize(("endpoint", "caller", "expected"), MATRIX)
def test_authorization_matrix(cast: Cast, endpoint: Endpoint, caller: str, expected: int) -> None:
    response = send(cast, endpoint, headers_of(cast, caller))
    assert response.status_code == expected, response.text
    body = response.json()
    if expected >= 400:
        assert set(body) == {"error", "detail"} and body["error"], body
    if expected == 401:
        assert response.headers.get("WWW-Authenticate") == "Bearer"


BAD_TOKENS = [
    "garbage",
    "expired",
    "forged",
    "unknown-key",
    "alg-none",
    "hs256-public-key",
    "wrong-audience",
    "wrong-issuer",
    "unknown-role",
    "missing-jti",
]
ONE_PER_SERVICE = [
    e for e in ENDPOINTS if e.name in {"GET /api/v1/orders", "GET /api/v1/assets", "GET /users"}
]


def test_the_real_key_with_valid_claims_is_accepted_everywhere(cast: Cast) -> None:
    """The control for the forgeries below: a token built the same way but signed by the auth service's key
    and with valid claims (an admin's) is accepted by every service."""
    for endpoint in ONE_PER_SERVICE:
        response = send(cast, endpoint, bearer(cast.tokens.real()))
        assert response.status_code == 200, (endpoint.name, response.text)


@pytest.mark.parametrize("kind", BAD_TOKENS)
@pytest.mark.parametrize("endpoint", ONE_PER_SERVICE, ids=lambda e: e.name)
def test_tokens_not_from_the_auth_service_are_refused(cast: Cast, endpoint: Endpoint, kind: str) -> None:
    response = send(cast, endpoint, bearer(cast.tokens.bad(kind)))
    assert response.status_code == 401, response.text
    assert "Traceback" not in response.text


def test_a_non_bearer_authorization_header_is_refused(cast: Cast) -> None:
    basic = {"Authorization": "Basic " + base64.b64encode(b"boss:boss-password").decode()}
    for endpoint in ONE_PER_SERVICE:
        assert send(cast, endpoint, basic).status_code == 401, endpoint.name


# --- what a customer sees without naming a customer, and what an admin sees --------------------------------


def test_customer_without_customer_id_sees_only_its_own_data(cast: Cast) -> None:
    api, intruder, owner = cast.api, cast.intruder, cast.owner
    for path, key in (
        ("/api/v1/orders", "orders"),
        ("/api/v1/assets", "assets"),
        ("/api/v1/ledger", "entries"),
    ):
        component = "order" if "orders" in path else "account"
        for customer in (intruder, owner):
            rows = api.call("GET", component, path, by=customer).json()[key]
            assert {r["customerId"] for r in rows} <= {customer.id}, path
    assert api.call("GET", "order", "/api/v1/orders", by=intruder).json()["orders"] == []
    everyone = api.call("GET", "account", "/api/v1/assets", by=cast.admin).json()["assets"]
    assert {owner.id, intruder.id} <= {a["customerId"] for a in everyone}


def test_unknown_order_is_404_for_everyone(cast: Cast) -> None:
    missing = str(uuid.uuid4())
    for user in (cast.owner, cast.admin):
        assert cast.api.get_order(user, missing).status_code == 404
        assert cast.api.cancel(user, missing).status_code == 404
    assert cast.api.match(cast.admin, missing).status_code == 404


# --- the deposit policy ------------------------------------------------------------------------------------


def test_customer_may_ask_to_deposit_only_try_into_its_own_account(cast: Cast) -> None:
    api, admin = cast.api, cast.admin
    customer, other = api.customer(), api.customer()
    asked = api.deposit(customer, customer, "TRY", "25.5")
    assert asked.status_code == 202 and asked.json()["status"] == "REQUESTED", asked.text
    for asset in ("AAPL", "XU100", "BTC"):
        refused = api.deposit(customer, customer, asset, "1")
        assert refused.status_code == 403, refused.text
        assert "only TRY" in refused.json()["error"]
    assert api.deposit(customer, other, "TRY", "1").status_code == 403
    assert api.deposit(admin, customer, "AAPL", "3").status_code == 200
    assert api.balances(admin, customer) == {"AAPL": (D(3), D(3))}  # the TRY waits for an admin
    assert api.decide(admin, "deposit", asked.json()["id"], "approve").status_code == 200
    assert api.balances(admin, customer) == {"TRY": (D("25.5"), D("25.5")), "AAPL": (D(3), D(3))}
    assert api.balances(admin, other) == {}
    kinds = [e["kind"] for e in api.ledger_of(admin, customer)]
    assert kinds == ["DEPOSIT", "DEPOSIT"]


# --- refused requests change nothing -----------------------------------------------------------------------


def snapshot(api: Api, admin: User, customer: User) -> tuple[Any, ...]:
    orders = [(o["id"], o["status"], o["updateDate"]) for o in api.orders_of(admin, customer)]
    return (api.balances(admin, customer), orders, api.ledger_of(admin, customer))


def test_refused_requests_change_nothing(cast: Cast) -> None:
    """Every request of the matrix that is refused, sent at a fresh victim with money and orders: the victim's
    balances, orders and ledger, and the intruder's, are exactly as before."""
    api, admin = cast.api, cast.admin
    victim, intruder = api.customer(), api.customer()
    api.deposit(admin, victim, "TRY", "500")
    api.deposit(admin, victim, "AAPL", "5")
    api.deposit(admin, intruder, "TRY", "500")
    order = api.wait_order(victim, api.place(victim, "SELL", "AAPL", "1", api.marketable(victim, "SELL")))
    assert order["status"] == "MATCHED"
    paid = 500 + D(str(order["executedPrice"]))
    api.wait_balances(admin, victim, {"TRY": (paid, paid), "AAPL": ("4", "4")})
    tokens = Tokens(cast.tokens.real_key, victim)
    scene = Cast(api, admin, victim, intruder, order["id"], tokens, cast.resting_price)
    before = snapshot(api, admin, victim), snapshot(api, admin, intruder)

    refused = 0
    for endpoint in ENDPOINTS:
        for caller in CALLERS:
            if endpoint.expected.get(caller, 401) in (401, 403, 404):
                response = send(scene, endpoint, headers_of(scene, caller))
                assert response.status_code in (401, 403, 404), (endpoint.name, caller, response.text)
                refused += 1
    assert api.deposit(victim, victim, "AAPL", "100").status_code == 403
    assert refused > 40

    time.sleep(0.5)  # had anything been let through, its events would have had time to be processed
    assert (snapshot(api, admin, victim), snapshot(api, admin, intruder)) == before


# --- a second system: deposits admin-only, manual execution (orders stay PENDING) ---------------------------


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    running = RunningSystem(
        tmp_path_factory.mktemp("strict") / "data", system_env(OMS_CUSTOMER_DEPOSITS="false")
    )
    running.start("--execution", "manual")
    yield Api(running)
    running.stop()


def pending_order(api: Api, customer: User, limit: D) -> str:
    order_id = api.place(customer, "BUY", "AAPL", "1", str(limit))
    order = api.wait_order(customer, order_id, until=lambda o: o["fundsReserved"])
    assert (order["status"], order["fundsReserved"]) == ("PENDING", True)
    return order_id


def test_customer_deposits_false_makes_every_deposit_admin_only(strict: Api) -> None:
    api = strict
    assert any(
        "OMS_CUSTOMER_DEPOSITS=false is deprecated: it means off" in line for line in api.system.output
    )
    admin, customer = api.admin(), api.customer()
    for asset in ("TRY", "AAPL"):
        refused = api.deposit(customer, customer, asset, "10")
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "deposits are made by an admin"
    assert api.balances(admin, customer) == {}
    assert api.ledger_of(admin, customer) == []
    assert api.deposit(admin, customer, "TRY", "10").status_code == 200
    assert api.balances(admin, customer) == {"TRY": (D(10), D(10))}
    # Withdrawing is still the customer's own business.
    withdraw = {"customerId": customer.id, "amount": "4", "iban": IBAN}
    assert (
        api.call("POST", "account", "/api/v1/assets/withdraw", by=customer, json=withdraw).status_code == 200
    )
    assert api.balances(admin, customer) == {"TRY": (D(6), D(6))}


def test_cancel_and_match_of_a_pending_order_by_caller(strict: Api) -> None:
    """With orders that stay PENDING, the cancel and match rows of the matrix that the immediate system can
    only show as 409: the owner and an admin cancel (200), only an admin matches (200), another customer
    sees nothing (404) and changes nothing."""
    api = strict
    admin, owner, intruder = api.admin(), api.customer(), api.customer()
    api.deposit(admin, owner, "TRY", "1000")
    limit = D(api.marketable(owner, "BUY"))  # an admin's match executes it at the ask
    first, second, third = (pending_order(api, owner, limit) for _ in range(3))
    held = 1000 - 3 * limit

    assert api.cancel(intruder, first).status_code == 404
    assert api.match(intruder, first).status_code == 403
    assert api.match(owner, first).status_code == 403
    assert api.call("DELETE", "order", "/api/v1/orders", params={"orderId": first}).status_code == 401
    assert api.call("POST", "order", f"/api/v1/orders/{first}/match").status_code == 401
    assert exact(api.get_order(owner, first))["status"] == "PENDING"
    assert api.wait_balances(admin, owner, {"TRY": (1000, held)}) == {"TRY": (D(1000), held)}

    assert api.cancel(owner, first).json() == {"message": "order canceled", "status": "CANCELED"}
    canceled_by_admin = api.cancel(admin, second)
    assert canceled_by_admin.status_code == 200
    assert api.get_order(owner, second).json()["reason"] == "canceled by admin"
    matched = api.match(admin, third)
    assert matched.status_code == 200 and matched.json()["status"] == "MATCHED"
    left = 1000 - exact(matched)["executedPrice"]  # the ask, not the limit
    assert api.wait_balances(admin, owner, {"TRY": (left, left), "AAPL": ("1", "1")}) == {
        "TRY": (left, left),
        "AAPL": (D(1), D(1)),
    }


# --- bad input on these endpoints is a 4xx, never a 500 ----------------------------------------------------
# (Each with its own connection: after a 500 the server drops the connection, which would break the next
# request on a shared one.)


def fresh(method: str, url: str, **kwargs: Any) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.request(method, url, **kwargs)


def test_ledger_cursor_beyond_bigint_is_refused_not_a_500(cast: Cast) -> None:
    response = fresh(
        "GET",
        cast.api.url("account", "/api/v1/ledger"),
        params={"cursor": str(2**63)},
        headers=cast.owner.headers,
    )
    assert response.status_code == 422, response.text


def test_orders_up_to_the_last_representable_day_is_not_a_500(cast: Cast) -> None:
    response = fresh(
        "GET",
        cast.api.url("order", "/api/v1/orders"),
        params={"endDate": "9999-12-31"},
        headers=cast.owner.headers,
    )
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert len(response.json()["orders"]) >= 1  # every order of the owner is before that day


def test_login_with_a_nul_character_in_the_username_is_refused_not_a_500(cast: Cast) -> None:
    response = fresh(
        "POST", cast.api.url("auth", "/login"), json={"username": "bo\u0000ss", "password": "boss-password"}
    )
    assert response.status_code in (401, 422), response.text
