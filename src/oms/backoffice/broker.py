"""The back office's connection to the broker, as the `backoffice` identity: the System page's broker health
(JetStream's account info: how many streams and consumers, storage used) and the audit's shared state in the
back office's own bucket (backoffice/audits.py) are all it may use it for — no event, no stream change."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient

from oms.backoffice.models import Health
from oms.kernel.nats_access import NatsConfigError, access_for, connect_nats
from oms.kernel.permissions import BACKOFFICE
from oms.kernel.settings import Settings

TIMEOUT = 3.0


class BrokerHealth:
    """One connection, made when first needed and again after it is lost (it does not reconnect itself,
    so a broker outage shows at once)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._nc: NatsClient | None = None
        self._connecting = asyncio.Lock()

    async def check(self) -> Health:
        """Whether JetStream answers, and what it holds."""
        try:
            nc = await self.connection()
            info = await nc.jetstream(timeout=TIMEOUT).account_info()
        except NatsConfigError as exc:
            return Health("nats", False, str(exc))
        except Exception as exc:
            return Health("nats", False, f"unreachable ({type(exc).__name__})")
        used = info.storage / 2**20
        return Health(
            "nats", True, f"JetStream: {info.streams} streams, {info.consumers} consumers, {used:.1f} MiB"
        )

    async def connection(self) -> NatsClient:
        """The connection, made now if there is none or it was lost (ConnectionError, NatsConfigError)."""
        async with self._connecting:
            if self._nc is None or self._nc.is_closed:
                access = access_for(self._settings, BACKOFFICE)
                self._nc = await asyncio.wait_for(connect_nats(access, once=True), TIMEOUT)
            return self._nc

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
