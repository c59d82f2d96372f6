"""The audit the System page runs, shared by every back-office replica through the broker (decision 018):
one audit at a time across replicas — a lease in the bucket OMS_BACKOFFICE, renewed while the audit runs and
expiring by itself when its holder dies — and the last result, kept in the same bucket, which every replica
shows."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

from oms.kernel.lease import Lease, LeaseTaken
from oms.kernel.topology import BACKOFFICE_BUCKET
from oms.runtime.audit import AuditReport

LEASE_KEY: Final = "audit.lease"
LAST_KEY: Final = "audit.last"
LEASE_SECONDS: Final = 15  # a dead holder's audit blocks the others this long at most
KEPT_VIOLATIONS: Final = 100  # the page shows this many; the count is kept whole (a value is ≤ 1 MB)


class AuditRunning(Exception):
    """An audit is running (in this replica or another): one at a time."""


@dataclass(frozen=True)
class AuditRun:
    """The last audit a back office ran: when, how long, and its report (its first KEPT_VIOLATIONS
    violations, and how many there were) or why it could not run."""

    finished_at: datetime
    seconds: float
    report: AuditReport | None
    error: str | None = None
    violation_count: int = 0

    def encoded(self) -> bytes:
        report = self.report.as_dict() if self.report else None
        if report is not None:
            report["violations"] = report["violations"][:KEPT_VIOLATIONS]  # type: ignore[index]
        run = {
            "finishedAt": self.finished_at.isoformat(),
            "seconds": self.seconds,
            "error": self.error,
            "violationCount": self.violation_count,
            "report": report,
        }
        return json.dumps(run, default=str).encode()

    @staticmethod
    def decoded(data: bytes) -> AuditRun:
        run: dict[str, Any] = json.loads(data)
        found = run["report"]
        report = None
        if found is not None:
            report = AuditReport(
                customers=found["customers"],
                balances=found["balances"],
                orders=found["orders"],
                ledger_entries=found["ledgerEntries"],
                try_total=Decimal(found["tryTotal"]),
                violations=found["violations"],
                pending_unreserved=found["pendingUnreserved"],
            )
        return AuditRun(
            datetime.fromisoformat(run["finishedAt"]),
            run["seconds"],
            report,
            run["error"],
            run["violationCount"],
        )


class SharedAudits:
    """The audit's lease and last result in the back office's bucket, over the connection `connect` gives
    (made when first needed, again after it is lost)."""

    def __init__(
        self, connect: Callable[[], Awaitable[NatsClient]], lease_seconds: int = LEASE_SECONDS
    ) -> None:
        self._connect = connect
        self._lease_seconds = lease_seconds
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._bucket: tuple[NatsClient, Lease, KeyValue] | None = None

    async def _reach(self) -> tuple[Lease, KeyValue]:
        connection = await self._connect()
        if self._bucket is None or self._bucket[0] is not connection:
            js = connection.jetstream()
            kv = await js.key_value(BACKOFFICE_BUCKET)
            self._bucket = (connection, Lease(js, kv, BACKOFFICE_BUCKET, LEASE_KEY, self._lease_seconds), kv)
        return self._bucket[1], self._bucket[2]

    async def running(self) -> bool:
        """Whether some replica runs an audit now."""
        lease, _ = await self._reach()
        return await lease.holder() is not None

    async def last(self) -> AuditRun | None:
        """The last audit any replica finished (None: none yet)."""
        _, kv = await self._reach()
        try:
            entry = await kv.get(LAST_KEY)
        except nats.js.errors.KeyNotFoundError:
            return None
        return AuditRun.decoded(entry.value or b"")

    async def run(self, audit: Callable[[], Awaitable[AuditRun]]) -> AuditRun:
        """Run `audit` unless one runs anywhere (AuditRunning), and keep its result for every replica."""
        lease, kv = await self._reach()
        try:
            async with lease.held(self._holder):
                result = await audit()
                await kv.put(LAST_KEY, result.encoded())  # under the lease: results land in the order run
        except LeaseTaken:
            raise AuditRunning from None
        return result
