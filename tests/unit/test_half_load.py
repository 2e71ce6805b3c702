"""Half load as `make bench` measures it: each Kafka-path run offered half of what the same model, workload and
workers applied at full speed in the results just written, so the figure means the same on any machine."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.common import RunResult
from bench.matrix import cluster_groups
from bench.report import half_load_rate, write_json
from devtools.cli import bench_matrix


def kafka_run(workload: str, workers: int, tps: float, rate: float = 0.0, ok: bool = True) -> RunResult:
    return RunResult(
        model="concurrent", workload=workload, workers=workers, path="kafka", duration_s=20.0, submitted=0,
        applied=0, rejected=0, applied_tps=tps, p50_ms=1.0, p95_ms=1.0, p99_ms=1.0, segment_moves=0,
        invariants_ok=ok, problems=[], cpu_s={}, peak_rss_mb={}, timeline=[], settings={"rate_tps": rate},
    )  # fmt: skip


def test_half_load_is_half_of_the_passing_full_speed_run_of_the_same_model_workload_and_workers() -> None:
    runs = [
        kafka_run("uniform", 2, 9_000.0, rate=4_000.0),  # itself at an offered rate: not full speed
        kafka_run("uniform", 2, 30_000.0, ok=False),
        kafka_run("uniform", 1, 20_000.0),
        kafka_run("uniform", 2, 15_351.0),
        kafka_run("hot-payer", 2, 14_875.0),
    ]
    assert half_load_rate(runs, "concurrent", "uniform", 2) == 7_676
    assert half_load_rate(runs, "concurrent", "hot-payer", 2) == 7_438
    with pytest.raises(LookupError, match="baseline uniform with 2"):
        half_load_rate(runs, "baseline", "uniform", 2)


def test_bench_half_of_offers_each_kafka_run_its_own_half(tmp_path: Path) -> None:
    results = tmp_path / "latest.json"
    write_json([kafka_run("uniform", 2, 15_000.0), kafka_run("hot-payer", 2, 12_000.0)], {}, results)
    args = argparse.Namespace(
        model=["concurrent"], workload=["uniform", "hot-payer"], workers=[2], path=["kafka"], half_of=str(results),
        rate=0.0, accounts=1_000, duration=5.0, partitions=8, batch_size=500, senders=16, http_clients=64,
        catch_up_transfers=0, catch_up_workloads=[], http_workloads=[], http_batch=[1], http_decided_rate=0.0,
    )  # fmt: skip
    assert [(run.workload, run.rate_tps) for run in bench_matrix(args)] == [("uniform", 7_500), ("hot-payer", 6_000)]


def test_the_models_take_turns_and_the_postgresql_control_runs_first_and_last() -> None:
    args = argparse.Namespace(
        model=["concurrent", "baseline", "postgres"], workload=["uniform", "hot-payer"], workers=[1, 2],
        path=["kafka"], half_of=None, rate=0.0, accounts=1_000, duration=5.0, partitions=8, batch_size=500,
        senders=16, http_clients=64, catch_up_transfers=0, catch_up_workloads=[], http_workloads=[], http_batch=[1],
        http_decided_rate=0.0,
    )  # fmt: skip
    matrix = bench_matrix(args)
    groups = cluster_groups(matrix)
    assert [(g[0].model, g[0].workers, g[0].control) for g in groups] == [
        ("postgres", 1, "first"), ("concurrent", 1, ""), ("baseline", 1, ""), ("concurrent", 2, ""),
        ("baseline", 2, ""), ("postgres", 1, "last"),
    ]  # fmt: skip
    assert all([run.workload for run in group] == ["uniform", "hot-payer"] for group in groups)
    alone = bench_matrix(argparse.Namespace(**{**vars(args), "model": ["postgres"]}))
    assert [(run.model, run.control) for run in alone] == [("postgres", ""), ("postgres", "")]
