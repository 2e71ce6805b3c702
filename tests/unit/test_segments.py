"""Segment rules and the reconciler's equalization plan."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments_app.domain.segments import LedgerError, Parked, Segment, plan_equalization


def apply(balances: list[int], moves: list[tuple[int, int, int]]) -> list[int]:
    result = list(balances)
    for source, destination, amount in moves:
        assert amount > 0
        result[source] -= amount
        assert result[source] >= 0
        result[destination] += amount
    return result


def test_one_full_segment_is_spread_evenly() -> None:
    assert apply([80, 0, 0, 0], plan_equalization([80, 0, 0, 0])) == [20, 20, 20, 20]


def test_remainder_goes_to_the_first_segments() -> None:
    assert apply([0, 0, 10], plan_equalization([0, 0, 10])) == [4, 3, 3]


def test_small_moves_are_skipped() -> None:
    assert plan_equalization([11, 10, 9], min_move=2) == []


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=16), st.integers(1, 1000))
def test_a_plan_conserves_money_never_overdraws_and_evens_out(balances: list[int], min_move: int) -> None:
    moves = plan_equalization(balances, min_move)
    after = apply(balances, moves)
    assert sum(after) == sum(balances)
    share = sum(balances) // len(balances)
    slack = min_move * len(balances)
    assert all(share - slack <= b <= share + 1 + slack for b in after)


def test_a_segment_with_waiting_debits_gives_nothing() -> None:
    segment = Segment(balance=50, parked=[Parked("t", 80, "bob", 0)])
    assert segment.amount_to_give(10) == 0
    assert Segment(balance=50).amount_to_give(80) == 50


def test_debit_never_goes_below_zero() -> None:
    with pytest.raises(LedgerError):
        Segment(balance=5).debit(6)
