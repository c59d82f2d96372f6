"""Token verification against forgeries: only EdDSA tokens signed by the auth key are accepted."""

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from oms.auth.domain import User, token_claims
from oms.auth.keys import SigningKey
from oms.kernel.revocation import Revocation, Revocations
from oms.kernel.tokens import KeysUnavailable, Role, StaticKeys, TokenError, TokenVerifier

ISSUER, AUDIENCE = "oms-auth", "oms"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return SigningKey.load_or_create(tmp_path_factory.mktemp("keys") / "k.pem")


@pytest.fixture(scope="module")
def verifier(key: SigningKey) -> TokenVerifier:
    return TokenVerifier(StaticKeys(key.jwks), ISSUER, AUDIENCE, Revocations.none_revoked())


def claims(**changes: object) -> dict[str, object]:
    user = User(uuid4(), "alice", Role.CUSTOMER, "hash", datetime.now(UTC))
    base = token_claims(
        user, now=datetime.now(UTC), lifetime=timedelta(hours=1), issuer=ISSUER, audience=AUDIENCE
    )
    return {**base, **changes}


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_verify_genuine_token_gives_principal(key: SigningKey, verifier: TokenVerifier) -> None:
    c = claims(role="admin")
    principal = await verifier.verify(key.sign(c))
    assert (principal.user_id, principal.username, principal.role) == (c["sub"], "alice", Role.ADMIN)


async def test_verify_alg_none_is_refused(key: SigningKey, verifier: TokenVerifier) -> None:
    token = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': key.kid})}.{_b64(claims(role='admin'))}."
    with pytest.raises(TokenError):
        await verifier.verify(token)


@pytest.mark.parametrize("secret_form", ["jwk", "x"])
async def test_verify_hs256_signed_with_public_key_is_refused(
    key: SigningKey, verifier: TokenVerifier, secret_form: str
) -> None:
    # The classic confusion attack: the public key, known to all, used as an HMAC secret.
    secret = json.dumps(key.public_jwk) if secret_form == "jwk" else key.public_jwk["x"]
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}.{_b64(claims(role='admin'))}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(TokenError, match="not signed by the auth service"):
        await verifier.verify(token)


async def test_verify_token_of_another_ed25519_key_with_our_kid_is_refused(
    key: SigningKey, verifier: TokenVerifier
) -> None:
    token = jwt.encode(claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": key.kid})
    with pytest.raises(TokenError, match="invalid token"):
        await verifier.verify(token)


async def test_verify_rs256_token_is_refused(key: SigningKey, verifier: TokenVerifier) -> None:
    rsa = generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), rsa, algorithm="RS256", headers={"kid": key.kid})
    with pytest.raises(TokenError):
        await verifier.verify(token)


async def test_verify_unknown_kid_is_refused(verifier: TokenVerifier, tmp_path: Path) -> None:
    other = SigningKey.load_or_create(tmp_path / "other.pem")
    with pytest.raises(TokenError, match="unknown key"):
        await verifier.verify(other.sign(claims()))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"exp": int(time.time()) - 10}, "expired"),
        ({"aud": "someone-else"}, "invalid"),
        ({"iss": "evil"}, "invalid"),
        ({"role": "superuser"}, "invalid"),
    ],
)
async def test_verify_wrong_claims_are_refused(
    key: SigningKey, verifier: TokenVerifier, change: dict[str, object], message: str
) -> None:
    with pytest.raises(TokenError, match=message):
        await verifier.verify(key.sign(claims(**change)))


@pytest.mark.parametrize(
    "change",
    [
        {"sub": "not-a-uuid"},
        {"sub": 42},
        {"sub": ""},
        {"username": ["alice"]},
        {"username": ""},
        {"jti": 7},
        {"jti": ""},
        {"role": None},
        {"iat": "yesterday"},
    ],
)
async def test_verify_signed_token_whose_claims_do_not_fit_is_refused_not_an_error(
    key: SigningKey, verifier: TokenVerifier, change: dict[str, object]
) -> None:
    """Signed by the real key (auth never issues these): still a TokenError (401), never a crash (500)."""
    with pytest.raises(TokenError):
        await verifier.verify(key.sign(claims(**change)))


@pytest.mark.parametrize("missing", ["exp", "jti", "sub", "aud", "iss", "role"])
async def test_verify_missing_claim_is_refused(
    key: SigningKey, verifier: TokenVerifier, missing: str
) -> None:
    c = claims()
    del c[missing]
    with pytest.raises(TokenError):
        await verifier.verify(key.sign(c))


async def test_verify_tampered_payload_is_refused(key: SigningKey, verifier: TokenVerifier) -> None:
    header, _, signature = key.sign(claims()).split(".")
    with pytest.raises(TokenError):
        await verifier.verify(f"{header}.{_b64(claims(role='admin'))}.{signature}")


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x"])
async def test_verify_garbage_is_refused(verifier: TokenVerifier, garbage: str) -> None:
    with pytest.raises(TokenError):
        await verifier.verify(garbage)


def _revoked(**entry: object) -> Revocations:
    revocations = Revocations(max_staleness=60)
    defaults: dict[str, object] = {"seq": 1, "token_id": None, "not_before": None, "expires_at": 2**40}
    revocations.apply([Revocation(**{**defaults, **entry})], 1)  # type: ignore[arg-type]
    return revocations


async def test_verify_a_signed_out_token_is_refused_and_others_are_not(key: SigningKey) -> None:
    signed_out, other = claims(), claims()
    verifier = TokenVerifier(
        StaticKeys(key.jwks),
        ISSUER,
        AUDIENCE,
        _revoked(user_id=signed_out["sub"], token_id=signed_out["jti"]),
    )
    with pytest.raises(TokenError, match="revoked"):
        await verifier.verify(key.sign(signed_out))
    assert (await verifier.verify(key.sign(other))).user_id == other["sub"]


async def test_verify_a_token_issued_before_the_users_cutoff_is_refused(key: SigningKey) -> None:
    now = int(time.time())
    before, after = claims(iat=now - 5), claims(iat=now)
    after["sub"] = before["sub"]
    verifier = TokenVerifier(
        StaticKeys(key.jwks), ISSUER, AUDIENCE, _revoked(user_id=before["sub"], not_before=now)
    )
    with pytest.raises(TokenError, match="revoked"):
        await verifier.verify(key.sign(before))
    assert (await verifier.verify(key.sign(after))).user_id == after["sub"]


async def test_verify_with_a_list_of_revocations_too_old_is_unavailable_not_accepted(
    key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    revocations = _revoked(user_id="nobody", token_id="x")
    verifier = TokenVerifier(StaticKeys(key.jwks), ISSUER, AUDIENCE, revocations)
    token = key.sign(claims())
    await verifier.verify(token)
    later = time.monotonic() + 61
    monkeypatch.setattr("oms.kernel.revocation.time.monotonic", lambda: later)
    with pytest.raises(KeysUnavailable):
        await verifier.verify(token)


def test_signing_key_is_kept_and_reloaded(tmp_path: Path) -> None:
    first = SigningKey.load_or_create(tmp_path / "k.pem")
    again = SigningKey.load_or_create(tmp_path / "k.pem")
    assert first.kid == again.kid
    assert (tmp_path / "k.pem").stat().st_mode & 0o077 == 0


class CountingKeys(StaticKeys):
    lookups = 0

    async def key_for(self, kid: str) -> object | None:
        self.lookups += 1
        return await super().key_for(kid)


async def test_verify_remembers_a_verified_token_until_it_expires(
    key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = CountingKeys(key.jwks)
    verifier = TokenVerifier(keys, ISSUER, AUDIENCE, Revocations.none_revoked())
    token = key.sign(claims(exp=int(time.time()) + 60))
    first, second = await verifier.verify(token), await verifier.verify(token)
    assert first == second and keys.lookups == 1
    later = time.time() + 61
    monkeypatch.setattr("oms.kernel.tokens.time.time", lambda: later)
    monkeypatch.setattr("jwt.api_jwt.datetime", _FrozenDatetime(later))
    with pytest.raises(TokenError, match="expired"):
        await verifier.verify(token)


async def test_verify_remembers_a_bounded_number_of_tokens(key: SigningKey) -> None:
    verifier = TokenVerifier(StaticKeys(key.jwks), ISSUER, AUDIENCE, Revocations.none_revoked(), remembered=3)
    for _ in range(5):
        await verifier.verify(key.sign(claims()))
    assert len(verifier._verified) == 3


async def test_verify_never_remembers_a_refused_token(key: SigningKey, verifier: TokenVerifier) -> None:
    forged = key.sign(claims()).rsplit(".", 1)[0] + "." + _b64({"x": 1})
    for _ in range(2):
        with pytest.raises(TokenError):
            await verifier.verify(forged)
    assert forged not in verifier._verified


class _FrozenDatetime:
    """jwt's clock, moved to `at` (a UNIX time)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self, tz: object = None) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)

    def __getattr__(self, name: str) -> object:
        return getattr(datetime, name)
