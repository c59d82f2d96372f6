"""What the relay may confirm: up to the newest released transaction, never past rows not deleted yet."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from oms.kernel.confirmation import Confirmations, Held, Relayed

T1 = Relayed(100, 200, ("a", "b"))
T2 = Relayed(200, 300, ("c",))
T3 = Relayed(300, 400, ("d", "e"))
EMPTY = Relayed(400, 450, ())


def held(*transactions: Relayed) -> Held:
    return Held(0.0, transactions)


def test_released_transactions_whose_rows_are_gone_are_confirmed_to_their_end() -> None:
    confirmations = Confirmations()
    assert confirmations.release([held(T1, T2), held(T3, EMPTY)], set()) == 450


def test_a_transaction_with_a_row_left_holds_the_position_before_it_until_the_row_is_gone() -> None:
    confirmations = Confirmations()
    assert confirmations.release([held(T1, T2, T3)], {"c"}) == 200  # not past T2: it must stream again
    assert confirmations.release([], {"c"}) == 200
    assert confirmations.release([], set()) == 400  # deleted by a later attempt


def test_rows_left_from_an_earlier_release_hold_back_later_ones() -> None:
    confirmations = Confirmations()
    assert confirmations.release([held(T1)], {"b"}) == 100
    assert confirmations.release([held(T2, T3)], {"b"}) == 100
    assert confirmations.release([], set()) == 400


def test_the_confirmed_position_never_goes_back() -> None:
    confirmations = Confirmations(confirmed=250)
    assert confirmations.release([held(T1)], {"a"}) == 250
    assert confirmations.release([held(T3)], set()) == 400


def test_once_the_oldest_waiting_rows_are_gone_the_position_moves_up_to_the_next_waiting_transaction() -> (
    None
):
    confirmations = Confirmations()
    assert confirmations.release([held(T1, T2, T3)], {"a", "d"}) == 100
    assert confirmations.release([], {"d"}) == 300  # T1's row is gone; T3's is still there
    assert confirmations.release([], set()) == 400


@dataclass(frozen=True)
class Session:
    """Transactions acknowledged in order, each released at a step (in order, several per step), and each of
    their rows deleted at its transaction's release or at a later step (not visible yet until then)."""

    transactions: list[Relayed]
    released_at: list[int]
    deleted_at: dict[str, int]

    @property
    def steps(self) -> range:
        return range(max([*self.released_at, *self.deleted_at.values()]) + 1)


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    transactions, released_at, deleted_at, lsn, step = [], [], {}, 100, 0
    for i in range(draw(st.integers(1, 8))):
        end = lsn + draw(st.integers(1, 50))
        ids = tuple(f"t{i}-{j}" for j in range(draw(st.integers(0, 3))))
        step += draw(st.integers(0, 1))
        transactions.append(Relayed(lsn, end, ids))
        released_at.append(step)
        deleted_at |= {event_id: step + draw(st.integers(0, 3)) for event_id in ids}
        lsn = end
    return Session(transactions, released_at, deleted_at)


@given(sessions())
def test_the_relay_never_confirms_past_rows_it_has_not_deleted_and_confirms_all_once_they_are(
    session: Session,
) -> None:
    confirmations = Confirmations()
    for step in session.steps:
        due = [t for t, at in zip(session.transactions, session.released_at, strict=True) if at == step]
        released = [t for t, at in zip(session.transactions, session.released_at, strict=True) if at <= step]
        undeleted = {i for t in released for i in t.event_ids if session.deleted_at[i] > step}

        confirmed = confirmations.release([held(*due)] if due else [], undeleted)

        waiting = [t.start_lsn for t in released if set(t.event_ids) & undeleted]
        newest = max((t.end_lsn for t in released), default=0)
        assert confirmed == (min(waiting) if waiting else newest)  # as far as it is safe, and no less
    assert confirmed == session.transactions[-1].end_lsn
