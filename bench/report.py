"""Benchmark results as a reader wants them: JSON for tools, a PNG plot, and the table in BENCHMARKS.md."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from bench.common import RunResult

RESULTS_DIR = Path(__file__).with_name("results")


def write_json(results: list[RunResult], machine: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{**asdict(result), "machine": machine} for result in results]
    path.write_text(json.dumps(rows, indent=1) + "\n")


def read_json(path: Path) -> tuple[list[RunResult], dict[str, Any]]:
    """Results written by `write_json`, and the machine they ran on."""
    rows = json.loads(path.read_text())
    machine = rows[0]["machine"] if rows else {}
    names = {f.name for f in fields(RunResult)}
    return [RunResult(**{k: v for k, v in row.items() if k in names}) for row in rows], machine


def half_load_rate(results: list[RunResult], model: str, workload: str, workers: int) -> int:
    """Half the TPS that the passing full-speed Kafka-path run of `model`, `workload` and `workers` applied: an
    offered load that leaves room, so its latency is the pipeline's without a queue, on the machine that measured
    the full speed."""
    for result in results:
        full_speed = result.path == "kafka" and not result.settings.get("rate_tps")
        if full_speed and result.invariants_ok and (result.model, result.workload, result.workers) == (
            model, workload, workers,
        ):  # fmt: skip
            return round(result.applied_tps / 2)
    raise LookupError(f"no passing full-speed Kafka-path run of {model} {workload} with {workers} worker(s)")


def series_name(result: RunResult) -> str:
    if result.model == "postgres":
        control = result.settings.get("control")
        return f"postgres ({control})" if control else "postgres"
    return f"{result.model} {result.workers}w {path_label(result)}"


def path_label(result: RunResult) -> str:
    """The path, and on the HTTP path the requests' shape: arrays (xN), answers at the decision at an offered rate."""
    if result.path != "http":
        control = result.settings.get("control")
        return f"{result.path} ({control})" if control else result.path
    label = result.path
    if result.settings["http_batch"] > 1:
        label += f" x{result.settings['http_batch']}"
    if result.settings.get("http_wait_s"):
        label += f" ?wait @{result.settings['rate_tps']:,.0f}/s"
    return label


def smoothed_rates(timeline: list[tuple[float, int]], window: int = 10) -> list[tuple[float, float]]:
    """Transactions per second between polls, averaged over `window` polls."""
    rates = [(t1, (n1 - n0) / (t1 - t0)) for (t0, n0), (t1, n1) in itertools.pairwise(timeline) if t1 - t0 > 0]
    return [
        (t, sum(r for _, r in rates[max(0, i - window + 1) : i + 1]) / len(rates[max(0, i - window + 1) : i + 1]))
        for i, (t, _) in enumerate(rates)
    ]


def write_plot(results: list[RunResult], path: Path) -> None:
    """Kafka-path throughput and latency by workload, models side by side (and the PostgreSQL peer); the HTTP
    runs; and the first workload's throughput over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [r for r in results if r.path != "http"]
    http = [r for r in results if r.path == "http"]
    series = list(dict.fromkeys(series_name(r) for r in main))
    colors = series_colors(series + list(dict.fromkeys(series_name(r) for r in http)))
    rows = 2 if main else 1  # a run of the HTTP path alone draws its own row only
    fig, axes = plt.subplots(rows, 2, figsize=(15, 4.5 * rows), squeeze=False)
    if main:
        draw_kafka_path(axes[0][0], axes[0][1], main, series, colors)
    http_ax, time_ax = axes[-1]
    names = [series_name(r) for r in http]
    http_ax.barh(names, [r.applied_tps for r in http], color=[colors[name] for name in names])
    http_ax.bar_label(http_ax.containers[0], labels=[f"{r.applied_tps:,.0f}/s, p99 {r.p99_ms:,.0f} ms" for r in http],
                      fontsize=7, padding=3)  # fmt: skip
    http_ax.invert_yaxis()
    http_ax.set_title("HTTP API: single transfers, arrays, answers at the decision (applied per second; p99: to the "
                      "202, or to the decision with ?wait)", fontsize=9)  # fmt: skip
    http_ax.set_visible(bool(http))
    timed = main or http  # a run of the HTTP path alone has no Kafka-path runs to draw over time
    first_workload = timed[0].workload if timed else ""
    for result in timed:
        if result.workload == first_workload:
            rates = smoothed_rates(result.timeline)
            name = series_name(result)
            time_ax.plot([t for t, _ in rates], [r for _, r in rates], label=name, color=colors[name])
    time_ax.set_title(f"{first_workload}: applied per second over the run (0.5 s average)")
    time_ax.set_xlabel("seconds since load started")
    time_ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_kafka_path(
    tps_ax: Any, latency_ax: Any, main: list[RunResult], series: list[str], colors: dict[str, Any]
) -> None:
    """Throughput and latency by workload, one bar per series (model, workers, path)."""
    workloads = list(dict.fromkeys(r.workload for r in main))
    by_key = {(series_name(r), r.workload): r for r in main}
    width = 0.8 / max(1, len(series))
    for n, name in enumerate(series):
        xs = [w + (n - (len(series) - 1) / 2) * width for w in range(len(workloads))]
        runs = [by_key.get((name, workload)) for workload in workloads]
        tps_ax.bar(xs, [r.applied_tps if r else 0 for r in runs], width, label=name, color=colors[name])
        if name.endswith("catch-up"):  # no latency: every transfer waited in the backlog by design
            continue
        latency_ax.bar(xs, [r.p99_ms if r else 0 for r in runs], width, label=name, color=colors[name])
        latency_ax.scatter(xs, [r.p50_ms if r else float("nan") for r in runs], color="black", s=8, zorder=3)
    for ax in (tps_ax, latency_ax):
        ax.set_xticks(range(len(workloads)), workloads)
        if ax.get_legend_handles_labels()[0]:  # a catch-up-only run draws no latency
            ax.legend(fontsize=7)
    tps_ax.set_title("applied transactions per second (Kafka path, live and catch-up; PostgreSQL peer)")
    latency_ax.set_title("latency, submitted to decided, ms: p99 bars, p50 dots (log; none for catch-up)")
    if any(r.p99_ms > 0 for r in main):  # NaN (catch-up) compares false
        latency_ax.set_yscale("log")
    latency_ax.set_visible(bool(latency_ax.get_legend_handles_labels()[0]))


def series_colors(names: list[str]) -> dict[str, str]:
    """One colour family per model (blues: concurrent, oranges: baseline, green: PostgreSQL), darker with
    more workers, so a series keeps its colour in every panel."""
    from matplotlib import colormaps

    families = {"concurrent": colormaps["Blues"], "baseline": colormaps["Oranges"], "postgres": colormaps["Greens"]}
    colors: dict[str, str] = {}
    for model, cmap in families.items():
        mine = [name for name in names if name.startswith(model)]
        for n, name in enumerate(mine):
            colors[name] = cmap(0.45 + 0.5 * (n + 1) / (len(mine) + 1))
    return colors


def per_role(by_process: dict[str, float]) -> tuple[float, float, float]:
    """Workers (summed) or the PostgreSQL server, the broker, the load generator (with wrk on the HTTP path)."""
    servers = sum(v for k, v in by_process.items() if k.startswith("worker") or k == "postgres")
    return servers, by_process.get("broker", 0.0), by_process.get("load-generator", 0.0) + by_process.get("wrk", 0.0)


def ratio_table(results: list[RunResult]) -> str:
    """Concurrent over baseline (same workers and path: live Kafka or catch-up) and over PostgreSQL (the mean of
    its runs first and last in the matrix), per workload."""
    tps = {(r.model, r.workload, r.workers, r.path): r.applied_tps for r in results}
    peer_runs: dict[str, list[float]] = {}
    for r in results:
        if r.model == "postgres":
            peer_runs.setdefault(r.workload, []).append(r.applied_tps)
    postgres = {workload: sum(runs) / len(runs) for workload, runs in peer_runs.items()}
    lines = [
        "| workload | workers | path | concurrent / baseline | concurrent / postgres |",
        "|---|---|---|---:|---:|",
    ]
    for (model, workload, workers, path), value in tps.items():
        if model != "concurrent" or path not in ("kafka", "catch-up"):
            continue
        baseline = tps.get(("baseline", workload, workers, path))
        peer = postgres.get(workload)
        versus_baseline = f"{value / baseline:.2f}" if baseline else "-"
        versus_postgres = f"{value / peer:.2f}" if peer else "-"
        lines.append(f"| {workload} | {workers} | {path} | {versus_baseline} | {versus_postgres} |")
    return "\n".join(lines)


SCALE_OUT_WORKERS = (4, 16, 64)
HOT_SHARE = 0.5  # of the hot workloads' transfers, the share that involves the hot account


def scale_out_table(results: list[RunResult]) -> str:
    """On paper: what N workers on N cores of their own would apply, from each catch-up run's measured worker CPU
    per transfer, assuming the work spreads evenly over at least N partitions. Runs with 2 or more workers
    include the upkeep of one standby replica (each worker also follows another's changelog); 1 worker has none.

    The baseline decides every transfer of an account in its home partition, so on the hot workloads the hot
    account's half of the traffic is one partition's work on one core, whatever the cluster's size: its ceiling
    is twice what one core applies. The Concurrent model spreads the hot account over every partition.
    """
    lines = [
        "| model | workload | measured with | worker CPU µs/transfer | broker CPU µs/transfer | "
        + " | ".join(f"{n} workers" for n in SCALE_OUT_WORKERS)
        + " |",
        "|---|---|---:|---:|---:|" + "---:|" * len(SCALE_OUT_WORKERS),
    ]
    for r in results:
        decided = r.applied_tps * r.duration_s  # within the timed drain, over which the CPU was measured
        if r.path != "catch-up" or not r.invariants_ok or not decided:
            continue
        servers, broker, _ = per_role(r.cpu_s)
        worker_us, broker_us = 1e6 * servers / decided, 1e6 * broker / decided
        one_core = 1e6 / worker_us
        ceiling = one_core / HOT_SHARE if r.model == "baseline" and r.workload.startswith("hot") else math.inf
        cells = []
        for n in SCALE_OUT_WORKERS:
            value = min(n * one_core, ceiling)
            cells.append(f"{value:,.0f}" + (" (hot-account ceiling)" if value == ceiling else ""))
        measured = f"{r.workers} worker" + ("s" if r.workers > 1 else "")
        lines.append(f"| {r.model} | {r.workload} | {measured} | {worker_us:.1f} | {broker_us:.1f} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines)


def ms(value: float) -> str:
    """A latency for the table: a catch-up run has none (every transfer waited in the backlog by design)."""
    return "-" if math.isnan(value) else str(value)


def workers_view(result: RunResult) -> str:
    """The workers' own latency, where the run has one (`driver.WORKERS_VIEW`): Kafka path, a record's timestamp
    to its commit; HTTP path, a submission's arrival at its partition's owner to its decision."""
    if math.isnan(result.record_p50_ms):
        return "-"
    return f"{result.record_p50_ms} / {result.record_p99_ms}"


def markdown_table(results: list[RunResult]) -> str:
    lines = [
        "| model | workload | workers | path | applied TPS | p50 ms | p95 ms | p99 ms | at the workers: p50 / p99 ms "
        "| rejected | segment moves | invariants | CPU s (workers or postgres / broker / generator) "
        "| CPU µs per decided transfer (same) | peak MB (same) | pace µs |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|",
    ]
    for r in results:
        cpu = " / ".join(f"{value:.0f}" for value in per_role(r.cpu_s))
        memory = " / ".join(f"{value:.0f}" for value in per_role(r.peak_rss_mb))
        lines.append(
            f"| {r.model} | {r.workload} | {r.workers} | {path_label(r)} | {r.applied_tps:,.0f} | {ms(r.p50_ms)} "
            f"| {ms(r.p95_ms)} | {ms(r.p99_ms)} | {workers_view(r)} | {r.rejected} | {r.segment_moves} "
            f"| {'ok' if r.invariants_ok else 'FAILED'} | {cpu} | {cpu_per_transfer(r)} | {memory} | {pace(r)} |"
        )
    return "\n".join(lines)


def cpu_per_transfer(result: RunResult) -> str:
    """Each role's CPU over the transfers decided in the same window (from the start of the load to the end of the
    drain): the budget the throughput work is measured against. On the HTTP path with single transfers, per
    request."""
    decided = result.applied + result.rejected
    if not decided:
        return "-"
    return " / ".join(f"{1e6 * seconds / decided:.1f}" for seconds in per_role(result.cpu_s))


def pace(result: RunResult) -> str:
    """The machine's pace before the run (`bench.pace`); results from before it was measured have none."""
    return "-" if math.isnan(result.pace_us) else f"{result.pace_us:.1f}"
