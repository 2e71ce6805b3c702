"""The partition audit counts segments in their stored forms, a chunk at a time, exactly as one by one."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from payments_app.domain.invariants import PartitionAudit
from payments_app.domain.ledger import PartitionMeta
from payments_app.domain.segments import Segment

amounts = st.integers(-(10**12), 10**15)
list_form = st.tuples(amounts, st.integers(0, 10**12), st.integers(0, 10**12)).map(list)
with_extras = st.tuples(amounts, st.integers(0, 10**9), st.integers(0, 10**9), st.just({"opened_by": "r1"})).map(list)
dict_form = st.builds(lambda b, i, o: {"balance": b, "moved_in": i, "moved_out": o}, amounts, st.integers(0, 10**9),
                      st.integers(0, 10**9))  # fmt: skip
stored_segments = st.lists(st.one_of(list_form, with_extras, dict_form), max_size=60)


@given(stored_segments, st.integers(1, 25))
def test_chunks_of_stored_segments_add_up_as_the_segments_do(stored: list[Any], chunk: int) -> None:
    segments = [Segment.from_stored(raw) for raw in stored]
    moved_in, moved_out = sum(s.moved_in for s in segments), sum(s.moved_out for s in segments)
    deposits = sum(s.balance for s in segments) - moved_in + moved_out
    meta = PartitionMeta(deposits=deposits, moved_in=moved_in, moved_out=moved_out)
    audit = PartitionAudit(7, meta)
    names = [f"acct-{n}" for n in range(len(stored))]
    for start in range(0, len(stored), chunk):
        audit.add_stored(stored[start : start + chunk], lambda index, start=start: names[start + index])
    report = audit.finish()
    assert report.segments == len(stored)
    assert report.balances == sum(s.balance for s in segments)
    negative = [f"partition 7: segment of {names[n]!r} is {s.balance}" for n, s in enumerate(segments) if s.balance < 0]
    assert report.problems == negative
    assert report.ok == (not negative)


def test_moves_that_disagree_with_the_totals_are_a_problem() -> None:
    audit = PartitionAudit(0, PartitionMeta(deposits=10, moved_in=5))
    audit.add_stored([[15, 4, 0]], lambda _: "a")
    assert audit.finish().problems == ["partition 0: segment moves (4 in, 0 out) disagree with totals (5 in, 0 out)"]
