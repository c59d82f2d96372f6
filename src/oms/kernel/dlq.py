"""The dead-letter queue, for operators (`oms dlq list|replay`): see what failed and why, and send it back.

A replayed message goes to its original subject with a new message id (the broker would drop a repeat of the
old one as a duplicate) and leaves the queue. It still carries the same event id, so a consumer that did
process it meanwhile skips it through its inbox. Publishing to an event subject needs the operator identity.

A service replays its own dead letters (the ops endpoint) without that right: `apply_dead_letter` hands the
event to the service's own batch handler — the same checks as the consumer's, the same inbox — and removes
it from the queue once applied.
"""

from __future__ import annotations

import logging
import time
from typing import Final, Literal

from oms.kernel.broker import ORIGINAL_ID_HEADER, Broker, DeadLetter, Outgoing
from oms.kernel.consumer import BatchHandler, describe
from oms.kernel.events import MalformedEvent, parse
from oms.kernel.topology import CONSUMERS

log = logging.getLogger(__name__)

REPLAYED_HEADER: Final = "Oms-Replayed-From"


class ReplayRefused(RuntimeError):
    """A dead letter that cannot be applied (it stays in the queue); the message says why."""


async def list_dead_letters(broker: Broker, limit: int = 1000) -> list[DeadLetter]:
    """The dead letters, oldest first (at most `limit`)."""
    return await broker.dead_letters(limit)


async def replay(broker: Broker, which: int | Literal["all"]) -> int:
    """Republish dead letter `which` (its queue sequence number) or all of them; returns how many were
    replayed. LookupError if `which` is not in the queue."""
    if which == "all":
        letters = await broker.dead_letters(limit=1_000_000)
    else:
        letters = [
            letter for letter in await broker.dead_letters(limit=1, start=which) if letter.seq == which
        ]
        if not letters:
            raise LookupError(f"no dead letter with sequence number {which}")
    for letter in letters:
        await replay_one(broker, letter)
    return len(letters)


async def replay_one(broker: Broker, letter: DeadLetter) -> None:
    headers = {REPLAYED_HEADER: str(letter.seq), ORIGINAL_ID_HEADER: letter.msg_id}
    msg_id = f"{letter.msg_id or 'unknown'}:replay:{letter.seq}"
    deadline = time.monotonic() + 30
    await broker.publish(
        [Outgoing(letter.subject, letter.payload, msg_id, headers)],
        give_up=lambda: time.monotonic() > deadline,
    )
    await broker.remove_dead_letter(letter.seq)
    log.info("replayed dead letter %d (%s) to %s", letter.seq, letter.msg_id, letter.subject)


async def apply_dead_letter(broker: Broker, letter: DeadLetter, handler: BatchHandler) -> None:
    """Apply `letter` with its consumer's batch handler (a duplicate is skipped by the inbox), then remove it
    from the queue; ReplayRefused if it is not an event its consumer accepts or the handler still fails."""
    consumer = CONSUMERS.get(letter.consumer)
    if consumer is None:
        raise ReplayRefused(f"dead letter {letter.seq} names no known consumer ({letter.consumer!r})")
    try:
        event = parse(letter.payload)
    except MalformedEvent as exc:
        raise ReplayRefused(f"dead letter {letter.seq} is not an event: {exc}") from None
    refusal = consumer.refusal(letter.subject, event.type)
    if refusal is not None:
        raise ReplayRefused(refusal)
    try:
        [outcome] = await handler([event])
    except Exception as exc:
        outcome = exc
    if outcome is not None:
        raise ReplayRefused(f"dead letter {letter.seq} still fails: {describe(outcome)}")
    await broker.remove_dead_letter(letter.seq)
    log.info("applied dead letter %d (%s) through the %s handler", letter.seq, event.id, consumer.name)
