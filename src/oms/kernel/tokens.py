"""Verifying the auth service's tokens anywhere: public keys only, one pinned algorithm."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Protocol

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from oms.kernel.errors import ApiError
from oms.kernel.revocation import Revocations, RevocationsUnknown
from oms.kernel.settings import Settings

ALGORITHM = "EdDSA"
REQUIRED_CLAIMS = ["sub", "username", "role", "iat", "exp", "iss", "aud", "jti"]


class Role(StrEnum):
    CUSTOMER = "customer"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user id (the customerId of their orders and assets), name and role, and the
    token they called with (its id, and when it was issued and expires, in unix seconds)."""

    user_id: str
    username: str
    role: Role
    token_id: str
    issued_at: int
    expires_at: float

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


class TokenError(Exception):
    """The token is missing, malformed, forged, expired or not for us."""


class KeysUnavailable(Exception):
    """The public keys or the revoked tokens cannot be read right now (not the caller's fault)."""


class PublicKeys(Protocol):
    async def key_for(self, kid: str) -> Any | None: ...


class StaticKeys:
    """Keys known in-process (the auth service verifies with its own public key)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys = {k["kid"]: jwt.PyJWK(k, ALGORITHM).key for k in jwks["keys"]}

    async def key_for(self, kid: str) -> Any | None:
        return self._keys.get(kid)


class JwksKeys:
    """Keys fetched from the auth service's JWKS endpoint; refetched when an unknown key id appears,
    at most once per `min_refetch_seconds` so forged key ids cannot hammer the auth service."""

    def __init__(self, url: str, min_refetch_seconds: float = 10.0) -> None:
        self.url = url
        self.min_refetch_seconds = min_refetch_seconds
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> Any | None:
        if kid not in self._keys:
            async with self._lock:
                if kid not in self._keys and time.monotonic() - self._fetched_at >= self.min_refetch_seconds:
                    await self._fetch()
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.get(self.url)
                response.raise_for_status()
                keys = response.json()["keys"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise KeysUnavailable(f"cannot fetch {self.url}: {exc}") from exc
        self._fetched_at = time.monotonic()
        self._keys = {
            k["kid"]: jwt.PyJWK(k, ALGORITHM).key for k in keys if k.get("alg") == ALGORITHM and "kid" in k
        }


class TokenVerifier:
    """Verifies tokens, remembering the ones it verified until they expire: a client sends the same token
    with every request, and checking its signature again would only repeat the same answer. Whether a token
    was revoked is asked every time, of the list kept in memory (`revocations`)."""

    def __init__(
        self,
        keys: PublicKeys,
        issuer: str,
        audience: str,
        revocations: Revocations,
        remembered: int = 10_000,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.revocations = revocations
        self.remembered = remembered
        self._verified: dict[str, Principal] = {}

    async def verify(self, token: str) -> Principal:
        """The caller behind `token`, or TokenError. Only EdDSA is accepted: `none`, HS256 and RS256
        tokens are refused before any key is looked at."""
        known = self._verified.get(token)
        if known is None or time.time() >= known.expires_at:
            self._verified.pop(token, None)
            known = await self._verify(token)
            if len(self._verified) >= self.remembered:
                del self._verified[next(iter(self._verified))]  # the oldest
            self._verified[token] = known
        try:
            revoked = self.revocations.refuses(known.user_id, known.token_id, known.issued_at)
        except RevocationsUnknown as exc:
            raise KeysUnavailable(str(exc)) from exc
        if revoked:
            raise TokenError("token revoked")
        return known

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("malformed token") from exc
        if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
            raise TokenError("token not signed by the auth service")
        key = await self.keys.key_for(header["kid"])
        if key is None:
            raise TokenError("token signed with an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("invalid token") from exc
        return _principal(claims)


def _principal(claims: dict[str, Any]) -> Principal:
    """The claims as typed values; a signed token whose claims do not fit is refused like a forged one."""
    sub, username, jti = claims["sub"], claims["username"], claims["jti"]
    if not all(isinstance(value, str) and value for value in (sub, username, jti)):
        raise TokenError("invalid token")
    try:
        user_id, role = str(uuid.UUID(sub)), Role(claims["role"])
        return Principal(user_id, username, role, jti, int(claims["iat"]), float(claims["exp"]))
    except (ValueError, TypeError, OverflowError) as exc:
        raise TokenError("invalid token") from exc


def verifier_for(settings: Settings, revocations: Revocations) -> TokenVerifier:
    """How every service but auth verifies tokens: with auth's public keys and its list of revocations."""
    keys = JwksKeys(f"{settings.auth_url.rstrip('/')}/.well-known/jwks.json")
    return TokenVerifier(keys, settings.token_issuer, settings.token_audience, revocations)


_bearer = HTTPBearer(auto_error=False, description="A token from the auth service's POST /login")


async def optional_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal | None:
    """The caller if a bearer token was sent (401 if it is not valid), else None."""
    if credentials is None:
        return None
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        return await verifier.verify(credentials.credentials)
    except TokenError as exc:
        raise ApiError(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    except KeysUnavailable:
        raise ApiError(503, "cannot verify tokens right now", headers={"Retry-After": "5"}) from None


async def current_principal(principal: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
    if principal is None:
        raise ApiError(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return principal


async def admin_principal(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "admin role required")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
AdminUser = Annotated[Principal, Depends(admin_principal)]
MaybeUser = Annotated[Principal | None, Depends(optional_principal)]
