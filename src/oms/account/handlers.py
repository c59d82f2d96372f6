"""The account service's event handlers: order.created → reserve, order.canceled → release,
order.matched → settle. A batch of events runs in one unit of work with their inbox rows, order and balance
locks and outbox events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from oms.account.domain import Problem
from oms.account.store import Accounts
from oms.kernel.consumer import Outcome
from oms.kernel.events import AnyEvent, Envelope
from oms.kernel.unit_of_work import UnitOfWorkFactory


class InconsistentEvent(Exception):
    """An event contradicts the stored state (retried, then dead-lettered for a person to look at)."""


async def handle_batch(
    unit_of_work: UnitOfWorkFactory[Accounts], envelopes: Sequence[Envelope[AnyEvent]]
) -> list[Outcome]:
    """Apply events from the order service in stream order, each at most once, in one unit of work."""
    failed: dict[uuid.UUID, Exception] = {}
    async with unit_of_work() as tx:
        todo = await tx.inbox.first_deliveries(envelopes)
        book, created = await tx.repository.load_book(
            (envelope.order_id for envelope in todo), [envelope.event for envelope in todo]
        )
        effects = []
        now = datetime.now(UTC)
        for envelope in todo:
            effect = book.answer(envelope.event, now)
            if effect.refused is not None:
                # Not applied: retried, and if it stays wrong, dead-lettered for a person to look at.
                assert effect.refused.problem is Problem.INCONSISTENT, effect.refused
                failed[envelope.id] = InconsistentEvent(effect.refused.message)
            else:
                effects.append(effect)
                tx.emit(*effect.events)
        tx.inbox.forget(failed)
        tx.repository.store(effects, created)
    return [failed.get(envelope.id) for envelope in envelopes]
