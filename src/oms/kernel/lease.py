"""A lease on one key of a JetStream key-value bucket: one holder at a time across processes and hosts, gone
by itself when its holder stops renewing it. The entry carries a per-message TTL, so the server expires it on
its own clock (no clocks of the holders compared): a holder that crashed blocks nobody for longer than the
lease. Taking the lease is "create the key unless it exists"; renewing and releasing expect the revision the
holder wrote last, so a holder whose lease ran out and was taken by another never renews or releases the
other's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

_WRONG_LAST_SEQUENCE: Final = (10071, 10164)  # JetStream: the key's last revision is not the one expected


class LeaseTaken(Exception):
    """Someone holds the lease (`holder`: who, as they wrote it; None if it ended meanwhile)."""

    def __init__(self, holder: str | None) -> None:
        super().__init__(f"held by {holder}" if holder else "held")
        self.holder = holder


def _wrong_revision(exc: nats.js.errors.APIError) -> bool:
    return exc.err_code in _WRONG_LAST_SEQUENCE


class Lease:
    """The lease `key` of a bucket (whose stream allows per-message TTLs), `seconds` long (whole seconds: the
    server's TTL unit), renewed every third of it while held. Made by `Lease.of`."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str, key: str, seconds: int) -> None:
        self._js = js
        self._kv = kv  # the bucket `bucket`, through `js`
        self._subject = f"$KV.{bucket}.{key}"
        self.key = key
        self.seconds = seconds

    @classmethod
    async def of(cls, js: JetStreamContext, bucket: str, key: str, seconds: int) -> Lease:
        """The lease `key` of `bucket`, reached through `js`."""
        return cls(js, await js.key_value(bucket), bucket, key, seconds)

    async def holder(self) -> str | None:
        """Who holds it now (None: nobody)."""
        try:
            entry = await self._kv.get(self.key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return (entry.value or b"").decode()

    async def acquire(self, holder: str) -> int | None:
        """Take it as `holder` if nobody holds it: the revision written, or None."""
        try:
            return await self._kv.create(self.key, holder.encode(), msg_ttl=self.seconds)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    async def renew(self, holder: str, revision: int) -> int | None:
        """Extend it by `seconds` from now if `revision` is still the last one written: the new revision, or
        None (it ran out, and perhaps someone else holds it now)."""
        headers = {Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(revision)}
        try:
            ack = await self._js.publish(
                self._subject, holder.encode(), headers=headers, msg_ttl=self.seconds
            )
        except nats.js.errors.APIError as exc:
            if _wrong_revision(exc):
                return None
            raise
        return ack.seq

    async def release(self, revision: int) -> None:
        """Give it up, unless it ran out and `revision` is no longer the last one written."""
        try:
            await self._kv.delete(self.key, last=revision)
        except nats.js.errors.APIError as exc:
            if not _wrong_revision(exc):
                raise

    @asynccontextmanager
    async def held(self, holder: str) -> AsyncIterator[None]:
        """Hold it for the block, renewing it meanwhile; LeaseTaken when someone else holds it. If renewing
        fails (the broker away longer than the lease) the block goes on, and the lease may end under it."""
        revision = await self.acquire(holder)
        if revision is None:
            raise LeaseTaken(await self.holder())
        last = [revision]
        renewing = asyncio.create_task(self._keep(holder, last), name=f"lease-{self.key}")
        try:
            yield
        finally:
            renewing.cancel()
            with suppress(asyncio.CancelledError):
                await renewing
            with suppress(nats.errors.Error, TimeoutError):  # not released: it expires
                await self.release(last[0])

    async def _keep(self, holder: str, last: list[int]) -> None:
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                renewed = await self.renew(holder, last[0])
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("lease %s: not renewed (%s); trying again", self.key, exc)
                continue
            if renewed is None:
                log.warning("lease %s ran out before it was renewed", self.key)
                return
            last[0] = renewed
