"""The in-memory copy of auth's revoked tokens: what it refuses, what it forgets, when it cannot tell."""

from __future__ import annotations

import time

import pytest

from oms.kernel.revocation import Revocation, Revocations, RevocationsUnknown, sync

LATER = int(time.time()) + 3600


def signed_out(seq: int, token_id: str, expires_at: int = LATER) -> Revocation:
    return Revocation(seq, "u-1", token_id, None, expires_at)


def cutoff(seq: int, not_before: int, user_id: str = "u-1") -> Revocation:
    return Revocation(seq, user_id, None, not_before, LATER)


def test_a_cutoff_refuses_tokens_issued_before_it_and_the_latest_cutoff_wins() -> None:
    revocations = Revocations(max_staleness=60)
    revocations.apply([cutoff(1, 1000), cutoff(2, 2000), cutoff(3, 1500)], 3)
    assert revocations.refuses("u-1", "any", 1999)
    assert not revocations.refuses("u-1", "any", 2000)
    assert not revocations.refuses("u-2", "any", 0)
    assert revocations.cursor == 3


def test_entries_no_living_token_needs_are_forgotten() -> None:
    revocations = Revocations(max_staleness=60)
    revocations.apply([signed_out(1, "old", expires_at=int(time.time()) - 1), signed_out(2, "live")], 2)
    assert revocations.refuses("u-1", "live", 0)
    assert "old" not in revocations._tokens  # that token has expired: nothing to refuse any more


def test_a_copy_never_read_or_read_too_long_ago_cannot_tell(monkeypatch: pytest.MonkeyPatch) -> None:
    revocations = Revocations(max_staleness=30)
    with pytest.raises(RevocationsUnknown):
        revocations.refuses("u-1", "t", 0)
    revocations.apply([], 0)
    assert not revocations.refuses("u-1", "t", 0)
    later = time.monotonic() + 31
    monkeypatch.setattr("oms.kernel.revocation.time.monotonic", lambda: later)
    with pytest.raises(RevocationsUnknown):
        revocations.refuses("u-1", "t", 0)


async def test_sync_reads_page_after_page_from_the_cursor() -> None:
    log = [signed_out(seq, f"t{seq}") for seq in range(1, 2501)]
    asked: list[int] = []

    async def fetch(after: int) -> tuple[list[Revocation], int]:
        asked.append(after)
        page = [r for r in log if r.seq > after][:1000]
        return page, page[-1].seq if len(page) == 1000 else len(log)

    revocations = Revocations(max_staleness=60)
    await sync(revocations, fetch)
    assert asked == [0, 1000, 2000]
    assert revocations.cursor == 2500 and revocations.refuses("u-1", "t2500", 0)
