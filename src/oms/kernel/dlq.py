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


async def list_dead_letters(
    broker: Broker, limit: int = 1000, consumer: str | None = None
) -> list[DeadLetter]:
    """The dead letters of `consumer` (None: every consumer's, which needs the operator), oldest first."""
    return await broker.dead_letters(limit, consumer=consumer)


async def replay(broker: Broker, which: str | Literal["all"]) -> int:
    """Republish dead letter `which` (`<consumer>:<seq>`, or just `<seq>` when only one consumer's queue has
    it) or all of them; returns how many were replayed. LookupError if `which` is not in a queue."""
    letters = await broker.dead_letters(limit=1_000_000) if which == "all" else [await find(broker, which)]
    for letter in letters:
        await replay_one(broker, letter)
    return len(letters)


async def find(broker: Broker, which: str) -> DeadLetter:
    """The dead letter named `which`: `<consumer>:<seq>`, or `<seq>` if exactly one queue has that seq."""
    consumer, _, seq_text = which.rpartition(":")
    if not seq_text.isdigit() or (consumer and consumer not in CONSUMERS):
        raise LookupError(f"not a dead letter: {which!r} (give <consumer>:<seq>, e.g. account:3)")
    seq = int(seq_text)
    in_queues = [await letter_of(broker, name, seq) for name in ([consumer] if consumer else CONSUMERS)]
    found = [letter for letter in in_queues if letter is not None]
    if not found:
        raise LookupError(f"no dead letter {which}")
    if len(found) > 1:
        raise LookupError(f"{which} is in more than one queue: give one of {', '.join(f.id for f in found)}")
    return found[0]


async def letter_of(broker: Broker, consumer: str, seq: int) -> DeadLetter | None:
    """Dead letter `seq` of `consumer`'s queue, if it is still there."""
    letters = await broker.dead_letters(limit=1, start=seq, consumer=consumer)
    return letters[0] if letters and letters[0].seq == seq else None


async def replay_one(broker: Broker, letter: DeadLetter) -> None:
    headers = {REPLAYED_HEADER: letter.id, ORIGINAL_ID_HEADER: letter.msg_id}
    msg_id = f"{letter.msg_id or 'unknown'}:replay:{letter.id}"
    deadline = time.monotonic() + 30
    await broker.publish(
        [Outgoing(letter.subject, letter.payload, msg_id, headers)],
        give_up=lambda: time.monotonic() > deadline,
    )
    await broker.remove_dead_letter(letter)
    log.info("replayed dead letter %s (%s) to %s", letter.id, letter.msg_id, letter.subject)


async def apply_dead_letter(broker: Broker, letter: DeadLetter, handler: BatchHandler) -> None:
    """Apply `letter` with its consumer's batch handler (a duplicate is skipped by the inbox), then remove it
    from the queue; ReplayRefused if it is not an event its consumer accepts or the handler still fails."""
    consumer = CONSUMERS.get(letter.consumer)
    if consumer is None:
        raise ReplayRefused(f"dead letter {letter.id} names no known consumer ({letter.consumer!r})")
    try:
        event = parse(letter.payload)
    except MalformedEvent as exc:
        raise ReplayRefused(f"dead letter {letter.id} is not an event: {exc}") from None
    refusal = consumer.refusal(letter.subject, event.type)
    if refusal is not None:
        raise ReplayRefused(refusal)
    try:
        [outcome] = await handler([event])
    except Exception as exc:
        outcome = exc
    if outcome is not None:
        raise ReplayRefused(f"dead letter {letter.id} still fails: {describe(outcome)}")
    await broker.remove_dead_letter(letter)
    log.info("applied dead letter %s (%s) through the %s handler", letter.id, event.id, consumer.name)
