"""`Idempotency-Key`: a retried request gets the first answer and creates nothing new.

The key is claimed in the same transaction as the request's effect: a concurrent retry waits on the key's
row until the first request commits (then reads its answer) or rolls back (then runs itself). Refusals are
not stored, so a retry after a 4xx runs again.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

from oms.kernel.errors import ApiError
from oms.kernel.sql import Write

MAX_KEY_LENGTH: Final = 200


@dataclass(frozen=True)
class StoredAnswer:
    status_code: int
    body: dict[str, Any]


class KeyReused(Exception):
    """The key was used before for a different request."""


def request_hash(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyKeys(ABC):
    """The keys inside a unit of work: a key is claimed at once (a concurrent retry waits on it), its answer
    stored with the unit's other writes."""

    async def once(
        self,
        principal: str,
        key: str | None,
        request: tuple[str, str, Any],
        action: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Run `action` in this unit unless `key` already has an answer; then return that. `request` is
        (method, path, body): the same key with another request is refused (422)."""
        if key is None:
            return await action()
        fingerprint = request_hash(*request)
        try:
            stored = await self.claim(principal, key, fingerprint)
        except KeyReused:
            raise ApiError(422, "Idempotency-Key was already used for a different request") from None
        if stored is not None:
            return stored.body
        answer = await action()
        self.remember(principal, key, fingerprint, answer)
        return answer

    @abstractmethod
    async def claim(self, principal: str, key: str, fingerprint: str) -> StoredAnswer | None:
        """None if the request should run now, else the stored answer of the first request with `key`;
        KeyReused if that was another request."""

    @abstractmethod
    def remember(self, principal: str, key: str, fingerprint: str, body: dict[str, Any]) -> None:
        """Store the answer for `key`, with the unit's other writes."""


class PostgresKeys(IdempotencyKeys):
    def __init__(self, conn: asyncpg.Connection, stage: Callable[[Write], None]) -> None:
        self._conn = conn
        self._stage = stage

    async def claim(self, principal: str, key: str, fingerprint: str) -> StoredAnswer | None:
        inserted = await self._conn.fetchval(
            "INSERT INTO idempotency_keys (principal, key, request_hash) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING RETURNING true",
            principal,
            key,
            fingerprint,
        )
        if inserted:
            return None
        row = await self._conn.fetchrow(
            "SELECT request_hash, status_code, response::text AS response FROM idempotency_keys "
            "WHERE principal = $1 AND key = $2",
            principal,
            key,
        )
        assert row is not None
        if row["request_hash"] != fingerprint:
            raise KeyReused(key)
        return StoredAnswer(row["status_code"], json.loads(row["response"]))

    def remember(self, principal: str, key: str, fingerprint: str, body: dict[str, Any]) -> None:
        self._stage(_remembering(principal, key, 200, body))


def _remembering(principal: str, key: str, status_code: int, body: dict[str, Any]) -> Write:
    """The statement that stores the answer for `key` (with the request's effect)."""
    return Write(
        "UPDATE idempotency_keys SET status_code = $3, response = $4::text::jsonb "
        "WHERE principal = $1 AND key = $2",
        (principal, key, status_code, json.dumps(body, default=str)),
    )
