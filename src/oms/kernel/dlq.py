"""The dead-letter queue, for operators (`oms dlq list|replay`): see what failed and why, and send it back.

A replayed message goes to its original subject with a new message id (the broker would drop a repeat of the
old one as a duplicate) and leaves the queue. It still carries the same event id, so a consumer that did
process it meanwhile skips it through its inbox.
"""

from __future__ import annotations

import logging
import time
from typing import Final, Literal

from oms.kernel.broker import ORIGINAL_ID_HEADER, Broker, DeadLetter, Outgoing

log = logging.getLogger(__name__)

REPLAYED_HEADER: Final = "Oms-Replayed-From"


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
