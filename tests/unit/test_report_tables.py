"""The results tables: each role's CPU per decided transfer in every row (the budget the throughput work is measured
against: workers summed, the broker, the load generator with wrk), and the PostgreSQL control run first and last."""

from __future__ import annotations

import dataclasses

from bench.report import cpu_per_transfer, markdown_table, ratio_table
from tests.unit.test_scale_out import catch_up_run


def test_each_roles_cpu_is_divided_by_the_transfers_decided_in_the_same_window() -> None:
    run = dataclasses.replace(
        catch_up_run("concurrent", "uniform", worker_cpu_s=50.0, decided=900_000),
        rejected=100_000,
        cpu_s={"worker-0": 30.0, "worker-1": 29.0, "broker": 13.0, "load-generator": 6.5, "wrk": 3.0},
    )
    assert cpu_per_transfer(run) == "59.0 / 13.0 / 9.5"
    assert "| 59.0 / 13.0 / 9.5 |" in markdown_table([run])


def test_a_run_that_decided_nothing_has_no_figure() -> None:
    run = dataclasses.replace(catch_up_run("baseline", "uniform", worker_cpu_s=1.0), applied=0, applied_tps=0.0)
    assert cpu_per_transfer(run) == "-"


def test_the_postgresql_control_is_labelled_and_the_ratio_is_against_the_mean_of_its_two_runs() -> None:
    concurrent = dataclasses.replace(catch_up_run("concurrent", "uniform", 10.0), path="kafka", applied_tps=9_000.0)
    first, last = (
        dataclasses.replace(catch_up_run("postgres", "uniform", 1.0), path="sql", applied_tps=tps,
                            settings={"control": control})
        for control, tps in (("first", 4_000.0), ("last", 2_000.0))
    )  # fmt: skip
    table = markdown_table([first, concurrent, last])
    assert "| postgres | uniform | 2 | sql (first) |" in table and "| sql (last) |" in table
    assert "| uniform | 2 | kafka | - | 3.00 |" in ratio_table([first, concurrent, last])
