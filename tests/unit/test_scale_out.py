"""The scale-out table on paper: linear in workers from the measured CPU per transfer, capped for the baseline's
hot account, which one partition (one core) decides."""

from __future__ import annotations

from bench.common import RunResult
from bench.report import scale_out_table


def catch_up_run(model: str, workload: str, worker_cpu_s: float, decided: int = 1_000_000) -> RunResult:
    return RunResult(
        model=model, workload=workload, workers=2, path="catch-up", duration_s=10.0, submitted=decided,
        applied=decided, rejected=0, applied_tps=decided / 10, p50_ms=float("nan"), p95_ms=float("nan"),
        p99_ms=float("nan"), segment_moves=0, invariants_ok=True, problems=[],
        cpu_s={"worker-0": worker_cpu_s / 2, "worker-1": worker_cpu_s / 2, "broker": 5.0, "load-generator": 1.0},
        peak_rss_mb={}, timeline=[],
    )  # fmt: skip


def test_rows_scale_with_workers_and_the_baseline_hot_account_caps_at_two_cores_worth() -> None:
    rows = scale_out_table(
        [catch_up_run("concurrent", "hot-payer", 20.0), catch_up_run("baseline", "hot-payer", 20.0)]
    ).splitlines()[2:]
    # 20 µs per transfer: 50,000 a core
    assert rows[0] == "| concurrent | hot-payer | 2 workers | 20.0 | 5.0 | 200,000 | 800,000 | 3,200,000 |"
    ceiling = "100,000 (hot-account ceiling)"
    assert rows[1] == f"| baseline | hot-payer | 2 workers | 20.0 | 5.0 | {ceiling} | {ceiling} | {ceiling} |"


def test_only_passing_catch_up_runs_are_projected() -> None:
    failed = catch_up_run("concurrent", "uniform", 20.0)
    failed.invariants_ok = False
    live = catch_up_run("concurrent", "uniform", 20.0)
    live.path = "kafka"
    assert len(scale_out_table([failed, live]).splitlines()) == 2
