"""Revoked tokens, known to every service without a call to auth per request: each process keeps the list
auth publishes (signed-out tokens; users whose password changed or who were disabled) and follows it every
second or so (docs/decisions/012)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import httpx

from oms.kernel.secret_file import read_or_create
from oms.kernel.settings import Settings

log = logging.getLogger(__name__)

PAGE: Final = 1000  # revocations per answer of the feed
SERVICE_KEY_HEADER: Final = "X-OMS-Service-Key"
PRUNE_EVERY: Final = 60.0


@dataclass(frozen=True, slots=True)
class Revocation:
    """One entry of auth's list: one token (a sign-out), or every token of a user issued before
    `not_before` (a password change, a disable). Times are unix seconds."""

    seq: int
    user_id: str
    token_id: str | None
    not_before: int | None
    expires_at: int  # no token it refuses lives longer: the entry can be forgotten then

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "userId": self.user_id,
            "tokenId": self.token_id,
            "notBefore": self.not_before,
            "expiresAt": self.expires_at,
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> Revocation:
        not_before = data.get("notBefore")
        return cls(
            int(data["seq"]),
            str(data["userId"]),
            str(data["tokenId"]) if data.get("tokenId") else None,
            int(not_before) if not_before is not None else None,
            int(data["expiresAt"]),
        )


class RevocationsUnknown(Exception):
    """Auth's list has not been read for too long: which tokens are revoked is not known right now."""


@dataclass(frozen=True, slots=True)
class _Cutoff:
    not_before: int
    expires_at: int


class Revocations:
    """What this process knows of auth's list, up to `cursor` (the last entry's seq)."""

    def __init__(self, max_staleness: float) -> None:
        self.max_staleness = max_staleness
        self.cursor = 0
        self._tokens: dict[str, int] = {}  # token id → when it expires
        self._users: dict[str, _Cutoff] = {}
        self._synced_at = -math.inf
        self._pruned_at = -math.inf

    @classmethod
    def none_revoked(cls) -> Revocations:
        """A list known to be empty and never stale (tests and tools that verify tokens offline)."""
        revocations = cls(math.inf)
        revocations.apply([], 0)
        return revocations

    def apply(self, found: Iterable[Revocation], cursor: int) -> None:
        """Add the entries read after `self.cursor`; ask from `cursor` next. The list is current as of now."""
        for entry in found:
            if entry.token_id is not None:
                self._tokens[entry.token_id] = entry.expires_at
            elif entry.not_before is not None:
                known = self._users.get(entry.user_id)
                if known is None or known.not_before < entry.not_before:
                    self._users[entry.user_id] = _Cutoff(entry.not_before, entry.expires_at)
        self.cursor = cursor
        self._synced_at = time.monotonic()
        if self._synced_at - self._pruned_at > PRUNE_EVERY:
            self._prune()

    def refuses(self, user_id: str, token_id: str, issued_at: int) -> bool:
        """Whether that token is revoked; RevocationsUnknown if the list is too old to tell."""
        if time.monotonic() - self._synced_at > self.max_staleness:
            raise RevocationsUnknown("the list of revoked tokens is out of date")
        if token_id in self._tokens:
            return True
        cutoff = self._users.get(user_id)
        return cutoff is not None and issued_at < cutoff.not_before

    def _prune(self) -> None:
        now = time.time()
        self._tokens = {t: expires for t, expires in self._tokens.items() if expires > now}
        self._users = {u: cutoff for u, cutoff in self._users.items() if cutoff.expires_at > now}
        self._pruned_at = time.monotonic()


Fetch = Callable[[int], Awaitable[tuple[list[Revocation], int]]]


async def sync(revocations: Revocations, fetch: Fetch) -> None:
    """Read every entry after `revocations.cursor`, a page at a time."""
    while True:
        found, cursor = await fetch(revocations.cursor)
        revocations.apply(found, cursor)
        if len(found) < PAGE:
            return


async def _follow(revocations: Revocations, fetch: Fetch, stop: asyncio.Event, every: float) -> None:
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        try:
            await sync(revocations, fetch)
        except Exception as exc:  # the next round retries; past max_staleness tokens are refused (503)
            log.warning("cannot read the revoked tokens: %s: %s", type(exc).__name__, exc)


@contextlib.asynccontextmanager
async def following(revocations: Revocations, fetch: Fetch, every: float) -> AsyncIterator[None]:
    """Read the list once (a failure is logged: tokens get 503 until a read succeeds), then every `every`
    seconds in the background while the block runs."""
    try:
        await asyncio.wait_for(sync(revocations, fetch), 10)
    except Exception as exc:
        log.warning("cannot read the revoked tokens yet: %s: %s", type(exc).__name__, exc)
    stop = asyncio.Event()
    task = asyncio.create_task(_follow(revocations, fetch, stop, every), name="revocations")
    try:
        yield
    finally:
        stop.set()
        await task


@contextlib.asynccontextmanager
async def following_auth(settings: Settings, revocations: Revocations) -> AsyncIterator[None]:
    """`following` auth's feed, as every service but auth does."""
    key = read_or_create(settings.service_key)
    async with httpx.AsyncClient() as http:
        fetch = auth_feed(http, settings.auth_url, key)
        async with following(revocations, fetch, settings.revocation_poll_seconds):
            yield


def auth_feed(http: httpx.AsyncClient, auth_url: str, service_key: bytes) -> Fetch:
    """Reads auth's `GET /revocations` with the services' shared key."""

    async def fetch(after: int) -> tuple[list[Revocation], int]:
        response = await http.get(
            f"{auth_url.rstrip('/')}/revocations",
            params={"after": after},
            headers={SERVICE_KEY_HEADER: service_key.decode()},
            timeout=3,
        )
        response.raise_for_status()
        body = response.json()
        return [Revocation.of(r) for r in body["revocations"]], int(body["cursor"])

    return fetch
