"""The machine's pace (`bench.pace`): measured before each run, and used to compare runs the drift separated."""

from __future__ import annotations

import math
import threading

from bench.driver import RunResult
from bench.pace import Pace, at_equal_pace, wait_until_quiet
from bench.report import markdown_table, ratio_table


def run(model: str, tps: float, pace_us: float, path: str = "kafka") -> RunResult:
    return RunResult(
        model=model, workload="uniform", workers=2 if model != "postgres" else 1, path=path, duration_s=20.0,
        submitted=0, applied=0, rejected=0, applied_tps=tps, p50_ms=1.0, p95_ms=1.0, p99_ms=1.0, segment_moves=0,
        invariants_ok=True, problems=[], cpu_s={}, peak_rss_mb={}, timeline=[], pace_us=pace_us,
    )  # fmt: skip


def test_the_pace_is_the_rules_cpu_per_transfer_on_this_machine() -> None:
    pace = Pace(transfers=2_000, accounts=500, rounds=2, quiet_wait_s=1.0)
    first, second = pace.measure(), pace.measure()
    assert 0.5 < first < 1_000 and 0.5 < second < 1_000  # µs per transfer: tens here, never zero or seconds


def test_waiting_for_quiet_ends_by_its_deadline_on_a_busy_machine() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinners = [threading.Thread(target=spin) for _ in range(2)]
    for spinner in spinners:
        spinner.start()
    try:
        waited = wait_until_quiet(1.5)
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join()
    assert 1.5 <= waited < 3.0


def test_a_ratio_at_equal_pace_scales_each_side_by_the_pace_it_ran_at() -> None:
    assert at_equal_pace(2.0, 10.0, 20.0) == 1.0  # twice the TPS while the machine ran twice as fast
    assert at_equal_pace(1.0, 30.0, 15.0) == 2.0
    assert math.isnan(at_equal_pace(2.0, math.nan, 20.0))


def test_the_ratio_table_gives_each_ratio_as_measured_and_at_equal_pace() -> None:
    rows = ratio_table([
        run("concurrent", 20_000.0, 10.0),
        run("baseline", 10_000.0, 20.0),  # ran later, on a machine twice as slow
        run("postgres", 5_000.0, math.nan, path="sql"),  # from before the pace was measured
    ]).splitlines()  # fmt: skip
    assert rows[0].count("at equal pace") == 2
    assert rows[2] == "| uniform | 2 | kafka | 2.00 | 1.00 | 4.00 | - |"


def test_each_row_shows_its_pace() -> None:
    table = markdown_table([run("concurrent", 20_000.0, 12.345), run("baseline", 10_000.0, math.nan)])
    rows = table.splitlines()
    assert rows[0].endswith("| pace µs |")
    assert rows[2].endswith("| 12.3 |") and rows[3].endswith("| - |")
