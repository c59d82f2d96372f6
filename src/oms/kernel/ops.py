"""Operations endpoints of an event-driven service (admins only): how far its relay and its consumer are
behind, and its consumer's dead letters, listed and replayed. The back office's System page reads them, so
that no one needs another service's database or the broker's tools for daily operation.

A replay here applies the dead letter through the service's own handler (`dlq.apply_dead_letter`): the
service's broker identity may not publish to event subjects."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Protocol

import asyncpg
from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel

from oms.kernel.broker import Broker, ConsumerStats, DeadLetter
from oms.kernel.consumer import BatchHandler
from oms.kernel.dlq import ReplayRefused, apply_dead_letter, letter_of
from oms.kernel.errors import ApiError, error_responses
from oms.kernel.outbox import relay_position
from oms.kernel.tokens import AdminUser
from oms.kernel.topology import slot_name

SCANNED_DEAD_LETTERS = 1000  # the most one listing reads
PAYLOAD_PREVIEW = 2000


class StatsSource(Protocol):
    async def consumer_stats(self, consumer: str) -> ConsumerStats: ...


class RelayStatus(BaseModel):
    slot: str
    slotExists: bool
    relayConnected: bool  # a relay is streaming the slot right now
    lagBytes: int | None  # WAL written but not yet confirmed by the relay
    outboxBacklog: int  # events not yet relayed (rows are deleted once the broker acknowledged them)
    oldestUnrelayedSeconds: float | None


class ConsumerStatus(BaseModel):
    name: str
    pending: int
    ackPending: int
    redelivered: int
    waiting: int


class OpsStatus(BaseModel):
    service: str
    relay: RelayStatus
    consumer: ConsumerStatus
    deadLetters: int


class DeadLetterView(BaseModel):
    seq: int
    subject: str
    consumer: str
    error: str
    deliveries: int
    msgId: str
    eventType: str | None
    orderId: str | None
    failedAt: datetime | None
    payload: str

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterView:
        text = letter.payload.decode("utf-8", "replace")
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        fields = event if isinstance(event, dict) else {}
        return cls(
            seq=letter.seq,
            subject=letter.subject,
            consumer=letter.consumer,
            error=letter.error,
            deliveries=letter.deliveries,
            msgId=letter.msg_id,
            eventType=_text(fields.get("type")),
            orderId=_text(fields.get("orderId")),
            failedAt=letter.failed_at,
            payload=text[:PAYLOAD_PREVIEW],
        )


class DeadLetterList(BaseModel):
    deadLetters: list[DeadLetterView]


class Replayed(BaseModel):
    replayed: int


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def relay_status(pool: asyncpg.Pool, slot: str) -> RelayStatus:
    """The relay's position in this service's own database: slot lag and what waits in the outbox."""
    position = await relay_position(pool, slot)
    return RelayStatus(
        slot=slot,
        slotExists=position.slot_exists,
        relayConnected=position.relay_connected,
        lagBytes=position.lag_bytes,
        outboxBacklog=position.backlog,
        oldestUnrelayedSeconds=position.oldest_seconds,
    )


async def consumer_dead_letters(broker: Broker, consumer: str) -> list[DeadLetter]:
    """This consumer's dead letters, oldest first."""
    return await broker.dead_letters(limit=SCANNED_DEAD_LETTERS, consumer=consumer)


def ops_router(service: str) -> APIRouter:
    """The /api/v1/ops endpoints of `service` (its relay slot and durable consumer share its name)."""
    router = APIRouter(prefix="/api/v1/ops", tags=["operations"])

    @router.get("/status", response_model=OpsStatus)
    async def status(_: AdminUser, request: Request) -> OpsStatus:
        """Relay lag, outbox backlog, consumer pending and redelivery counts, dead letters (admins)."""
        broker: Broker = request.app.state.broker
        stats_source: StatsSource = request.app.state.broker
        stats = await stats_source.consumer_stats(service)
        return OpsStatus(
            service=service,
            relay=await relay_status(request.app.state.pool, slot_name(service)),
            consumer=ConsumerStatus(
                name=stats.consumer,
                pending=stats.pending,
                ackPending=stats.ack_pending,
                redelivered=stats.redelivered,
                waiting=stats.waiting,
            ),
            deadLetters=len(await consumer_dead_letters(broker, service)),
        )

    @router.get("/dead-letters", response_model=DeadLetterList)
    async def dead_letters(
        _: AdminUser, request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> DeadLetterList:
        """The messages this service's consumer gave up on, oldest first (admins)."""
        letters = await consumer_dead_letters(request.app.state.broker, service)
        return DeadLetterList(deadLetters=[DeadLetterView.of(letter) for letter in letters[:limit]])

    @router.post("/dead-letters/{seq}/replay", response_model=Replayed, responses=error_responses(404, 409))
    async def replay(
        seq: Annotated[int, Path(ge=1, le=2**63 - 1)], _: AdminUser, request: Request
    ) -> Replayed:
        """Apply one dead letter with this service's handler and remove it from the queue (admins); 409 with
        the reason when it still cannot be applied."""
        broker: Broker = request.app.state.broker
        handler: BatchHandler = request.app.state.handler
        letter = await letter_of(broker, service, seq)
        if letter is None:
            raise ApiError(404, f"no dead letter {seq} of the {service} consumer")
        try:
            await apply_dead_letter(broker, letter, handler)
        except ReplayRefused as exc:
            raise ApiError(409, str(exc)) from None
        return Replayed(replayed=1)

    return router
