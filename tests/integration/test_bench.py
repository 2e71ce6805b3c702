"""The benchmark runs end to end on a small ledger, and its invariant check catches a broken one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.common import RunSettings
from bench.driver import run_group
from bench.pace import Pace
from bench.report import markdown_table, read_json, write_json, write_plot

pytestmark = pytest.mark.broker


def small(**overrides: object) -> RunSettings:
    return RunSettings(accounts=200, partitions=4, duration_s=2.0, batch_size=100, in_flight_batches=4, **overrides)


def no_pace() -> float:
    return math.nan


async def test_short_runs_sharing_one_cluster_complete_with_their_invariants(broker_url: str, tmp_path: Path) -> None:
    catch_up = small(workload="uniform", path="catch-up", catch_up_transfers=3_000)
    results = await run_group([small(workload="hot-payer"), small(workload="uniform"), catch_up], broker_url, None,
                              tmp_path, Pace().measure)  # fmt: skip
    for result in results:
        assert result.invariants_ok, result.problems
        assert result.submitted > 0 and result.applied + result.rejected == result.submitted
        assert result.applied_tps > 0
    assert all(result.p50_ms <= result.p99_ms for result in results[:2])
    assert all(0 < result.record_p50_ms <= result.record_p99_ms for result in results[:2])  # the workers' own view
    assert all(0 < result.pace_us < 1_000 for result in results)  # the machine's pace before each run
    assert results[1].segment_moves == 0  # every segment is funded: plain transfers never need a move
    assert results[2].submitted == 3_000 and math.isnan(results[2].p99_ms)  # the backlog, drained by restarted workers
    assert not any(tmp_path.glob("bench-*")), "a passing cluster's data is removed"
    write_json(results, {"cores": 2}, tmp_path / "latest.json")
    write_plot(results, tmp_path / "latest.png")
    assert (tmp_path / "latest.png").stat().st_size > 0
    assert "hot-payer" in markdown_table(results) and "| catch-up |" in markdown_table(results)
    assert [(r.workload, r.applied_tps) for r in read_json(tmp_path / "latest.json")[0]] == [
        (r.workload, r.applied_tps) for r in results
    ]


@pytest.mark.parametrize(("model", "path"), [("baseline", "kafka"), ("concurrent", "http")])
async def test_each_model_and_load_path_runs(model: str, path: str, broker_url: str, tmp_path: Path) -> None:
    (result,) = await run_group([small(model=model, path=path, workload="overdraft", http_batch=5)], broker_url,
                                None, tmp_path, no_pace)  # fmt: skip
    assert result.invariants_ok, result.problems
    assert (result.model, result.path) == (model, path)
    assert result.applied > 0 and result.rejected > 0 and result.applied + result.rejected == result.submitted
    assert result.p50_ms > 0
    assert 0 < result.record_p50_ms <= result.record_p99_ms  # the workers' own view, on either path
    if path == "http":  # wrk's clients: their CPU is counted, and no request was refused
        assert result.cpu_s["wrk"] > 0 and result.refused == 0
    write_plot([result], tmp_path / "latest.png")  # one path alone draws too
    assert (tmp_path / "latest.png").stat().st_size > 0


async def test_the_invariant_check_fails_on_a_broken_ledger(broker_url: str, tmp_path: Path) -> None:
    (result,) = await run_group([small(forge_credit=True)], broker_url, None, tmp_path, no_pace)
    assert not result.invariants_ok
    assert any(tmp_path.glob("bench-*")), "a failing cluster's data is kept for a look"
    assert any("more money arrived" in problem or "in flight" in problem for problem in result.problems)
