"""The watchdog's progress check: it fires only when records wait and nothing anywhere is applied for long."""

from __future__ import annotations

from payments_app.runtime.progress import ProgressWatch


def test_a_trailing_commit_marker_is_not_work_waiting() -> None:
    watch = ProgressWatch(stall_s=10)
    assert not watch.stalled({0: 41}, {0: 43}, now=0)
    assert not watch.stalled({0: 41}, {0: 43}, now=100)


def test_records_waiting_with_no_progress_anywhere_for_too_long_is_a_stall() -> None:
    watch = ProgressWatch(stall_s=10)
    assert not watch.stalled({0: 10, 1: 5}, {0: 11, 1: 50}, now=0)
    assert not watch.stalled({0: 10, 1: 5}, {0: 11, 1: 50}, now=9)
    assert watch.stalled({0: 10, 1: 5}, {0: 11, 1: 50}, now=11)


def test_progress_on_any_partition_resets_the_clock() -> None:
    watch = ProgressWatch(stall_s=10)
    watch.stalled({0: 10, 1: 5}, {0: 100, 1: 50}, now=0)
    assert not watch.stalled({0: 20, 1: 5}, {0: 100, 1: 50}, now=9)
    assert not watch.stalled({0: 20, 1: 5}, {0: 100, 1: 50}, now=18)
    assert watch.stalled({0: 20, 1: 5}, {0: 100, 1: 50}, now=20)
