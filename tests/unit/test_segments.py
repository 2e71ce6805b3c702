"""Segment rules and the reconciler's equalization plan."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments_app.domain.segments import LedgerError, Parked, Round, Segment, plan_equalization


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


amounts = st.integers(0, 10**15)
round_ids = st.integers(0, 2**40)
waiting_debits = st.builds(Parked, st.text(min_size=1), amounts, st.none() | st.text(), st.none() | round_ids)
rounds = st.builds(Round, round_ids, st.integers(0, 7), st.booleans(), st.dictionaries(st.integers(0, 7), amounts))
segments = st.builds(
    Segment,
    balance=amounts,
    moved_in=amounts,
    moved_out=amounts,
    parked=st.lists(waiting_debits, max_size=3),
    round=st.none() | rounds,
    opened_by=st.none() | st.text(),
)


@given(segments)
def test_a_segment_reads_back_as_it_was_stored(segment: Segment) -> None:
    stored = orjson.loads(orjson.dumps(segment.to_stored()))
    assert Segment.from_stored(stored) == segment
    if not (segment.parked or segment.round or segment.opened_by is not None):
        assert stored == [segment.balance, segment.moved_in, segment.moved_out]


def test_a_segment_in_the_dict_form_of_older_stores_still_reads() -> None:
    old = {"balance": 7, "moved_in": 2, "moved_out": 1, "parked": [{"tx_id": "t", "amount": 9, "payee": "b",
           "round": 3}], "round": [3, 1, False, [[2, 5]]], "opened_by": "req"}  # fmt: skip
    assert Segment.from_stored(old) == Segment(7, 2, 1, [Parked("t", 9, "b", 3)], Round(3, 1, False, {2: 5}), "req")
