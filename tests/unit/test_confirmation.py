"""What the relay may confirm: up to the newest released transaction, never past rows not deleted yet."""

from __future__ import annotations

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
