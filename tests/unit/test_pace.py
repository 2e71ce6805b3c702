"""The machine's pace (`bench.pace`): measured before each run, once the cores are quiet, and shown in each row."""

from __future__ import annotations

import math
import multiprocessing
import os
from multiprocessing.synchronize import Event as EventType

from bench.common import RunResult
from bench.pace import Pace, wait_until_quiet
from bench.report import markdown_table


def run(model: str, tps: float, pace_us: float) -> RunResult:
    return RunResult(
        model=model, workload="uniform", workers=2, path="kafka", duration_s=20.0, submitted=0, applied=0,
        rejected=0, applied_tps=tps, p50_ms=1.0, p95_ms=1.0, p99_ms=1.0, segment_moves=0, invariants_ok=True,
        problems=[], cpu_s={}, peak_rss_mb={}, timeline=[], pace_us=pace_us,
    )  # fmt: skip


def test_the_pace_is_the_rules_cpu_per_transfer_on_this_machine() -> None:
    pace = Pace(transfers=2_000, accounts=500, rounds=2, quiet_wait_s=1.0)
    first, second = pace.measure(), pace.measure()
    assert 0.5 < first < 1_000 and 0.5 < second < 1_000  # µs per transfer: tens here, never zero or seconds


def spin(stop: EventType) -> None:
    while not stop.is_set():
        pass


def test_waiting_for_quiet_ends_by_its_deadline_on_a_busy_machine() -> None:
    """Every core busy (processes, not threads: one GIL would keep a machine of many cores mostly idle)."""
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=spin, args=(stop,)) for _ in range(os.cpu_count() or 2)]
    for spinner in spinners:
        spinner.start()
    try:
        waited = wait_until_quiet(1.5)
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join()
    assert 1.5 <= waited < 3.0


def test_each_row_shows_its_pace() -> None:
    table = markdown_table([run("concurrent", 20_000.0, 12.345), run("baseline", 10_000.0, math.nan)])
    rows = table.splitlines()
    assert rows[0].endswith("| pace µs |")
    assert rows[2].endswith("| 12.3 |") and rows[3].endswith("| - |")
