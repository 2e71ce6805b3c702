"""Benchmark results as a reader wants them: JSON for tools, a PNG plot, and the table in BENCHMARKS.md."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.driver import RunResult

RESULTS_DIR = Path(__file__).with_name("results")


def write_json(results: list[RunResult], machine: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{**asdict(result), "machine": machine} for result in results]
    path.write_text(json.dumps(rows, indent=1) + "\n")


def write_plot(results: list[RunResult], path: Path) -> None:
    """Throughput over time for every run, and each run's latency percentiles side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    for result in results:
        label = f"{result.model} {result.workload} {result.workers}w"
        points = result.timeline
        rates = [(t1, (n1 - n0) / (t1 - t0)) for (t0, n0), (t1, n1) in itertools.pairwise(points) if t1 - t0 > 0]
        smoothed = [(t, sum(r for _, r in rates[max(0, i - 9) : i + 1]) / len(rates[max(0, i - 9) : i + 1]))
                    for i, (t, _) in enumerate(rates)]  # fmt: skip
        left.plot([t for t, _ in smoothed], [r for _, r in smoothed], label=label)
    left.set_title("applied transactions per second (0.5 s moving average)")
    left.set_xlabel("seconds since load started")
    left.set_ylabel("transactions / s")
    left.legend(fontsize=8)
    labels = [f"{r.model}\n{r.workload}\n{r.workers}w" for r in results]
    positions = range(len(results))
    width = 0.25
    for offset, (name, values) in enumerate(
        [
            ("p50", [r.p50_ms for r in results]),
            ("p95", [r.p95_ms for r in results]),
            ("p99", [r.p99_ms for r in results]),
        ]
    ):
        right.bar([p + (offset - 1) * width for p in positions], values, width, label=name)
    right.set_xticks(list(positions), labels, fontsize=8)
    right.set_title("end-to-end latency (submitted to decided), ms")
    right.set_yscale("log")
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(results: list[RunResult]) -> str:
    lines = [
        "| model | workload | workers | path | applied TPS | p50 ms | p95 ms | p99 ms | rejected | segment moves "
        "| invariants | CPU s (workers or postgres / broker / generator) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        workers_cpu = sum(v for k, v in r.cpu_s.items() if k.startswith("worker") or k == "postgres")
        cpu = f"{workers_cpu:.0f} / {r.cpu_s.get('broker', 0):.0f} / {r.cpu_s.get('load-generator', 0):.0f}"
        lines.append(
            f"| {r.model} | {r.workload} | {r.workers} | {r.path} | {r.applied_tps:,.0f} | {r.p50_ms} | {r.p95_ms} "
            f"| {r.p99_ms} | {r.rejected} | {r.segment_moves} | {'ok' if r.invariants_ok else 'FAILED'} | {cpu} |"
        )
    return "\n".join(lines)
