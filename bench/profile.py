"""Where the workers' CPU goes on the live Kafka path: one `payments bench` run, with py-spy sampling every worker
while the load runs, each sample sorted into a part of the write path (the first part whose frame is on its stack).

    .venv/bin/python -m bench.profile                      # Concurrent, uniform, 2 workers
    .venv/bin/python -m bench.profile --workload hot-payer --workers 1

Writes `profile.md` and `profile.json` to `--results-dir` (default `bench/results`): each part's share of the
samples and, from the run's own CPU per decided transfer, its microseconds per transfer. py-spy sees Python frames
only: time in C (RocksDB, orjson, uvloop's sockets) counts to the Python line that called it, and RocksDB's own
flush and compaction threads are in the run's CPU figure but in no part.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from bench.common import Progress
from bench.report import per_role

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKER_MODULE = "payments_app.worker"
LOAD_LINE = re.compile(r"\] load +(\d+\.\d)/")

#: (part, a regular expression one of the sample's frames matches); the first that matches takes the sample
PARTS: list[tuple[str, str]] = [
    ("standby: fetch, unpack, store writes", r"StandbyFollower\.run"),
    ("owner's store writes (checkpoint)", r"KafkaSession\.checkpoint"),
    ("money rules (process_batch)", r"process_batch"),
    ("encoding a commit (take_writes, encode_writes)", r"take_writes|encode_writes"),
    ("decoding records", r"decode_batch"),
    ("producing a commit", r"ledger_writer|send_in_batches|producer/"),
    ("consuming (Faust's consumer, aiokafka fetches)", r"consumer/|faust/transport|Fetcher"),
    ("background audit", r"audit_owned_partitions"),
    ("HTTP (progress polls, metrics)", r"web_protocol|RequestHandler"),
]
#: a sample whose innermost Python frame is the worker's run loop: the event loop, or I/O in C under it
LOOP = "the event loop, and I/O in C"
OTHER = "other Python (Faust, asyncio, aiokafka's threads)"


def classify(stack: str) -> str:
    """The part a collapsed stack (`frame;frame;...`, outermost first) belongs to."""
    for part, pattern in PARTS:
        if re.search(pattern, stack):
            return part
    if "execute_from_commandline" in stack.rpartition(";")[2]:
        return LOOP
    return OTHER


def shares(samples: Counter[str]) -> dict[str, float]:
    """Each part's share of all samples, largest first."""
    total = sum(samples.values()) or 1
    by_part: Counter[str] = Counter()
    for stack, count in samples.items():
        by_part[classify(stack)] += count
    return {part: count / total for part, count in by_part.most_common()}


def read_raw(path: Path) -> Counter[str]:
    """py-spy's raw (collapsed) output: `stack count` per line."""
    samples: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples[stack] += int(count)
    return samples


def spy_on(pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling one process 200 times a second, without pausing it."""
    py_spy = str(Path(sys.executable).parent / "py-spy")
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200", "--format", "raw",
               "--nonblocking", "--output", str(output)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def workers_of(process: psutil.Process) -> list[psutil.Process]:
    return [child for child in process.children(recursive=True) if WORKER_MODULE in " ".join(child.cmdline())]


def profile(args: argparse.Namespace, scratch: Path, progress: Progress) -> tuple[Counter[str], dict[str, object]]:
    """Run the bench, sample its workers from `--skip` seconds into the load for `--seconds`; the samples, and the
    run's result row."""
    results = scratch / "results"
    command = [sys.executable, "-u", "-m", "devtools.cli", "bench", "--model", args.model, "--workload", args.workload,
               "--workers", str(args.workers), "--path", "kafka", "--duration", str(args.duration),
               "--results-dir", str(results)]  # fmt: skip
    bench = subprocess.Popen(command, cwd=PROJECT_ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    samples: Counter[str] = Counter()
    try:
        assert bench.stderr is not None
        for line in bench.stderr:
            progress.show(line.strip()[-100:])
            match = LOAD_LINE.search(line)
            if match and float(match.group(1)) >= args.skip:
                break
        workers = workers_of(psutil.Process(bench.pid))
        if not workers:
            raise RuntimeError("the bench started no workers (or ended before its load)")
        progress.show(f"sampling {len(workers)} workers for {args.seconds} s")
        spies = [spy_on(worker.pid, args.seconds, scratch / f"worker-{n}.txt") for n, worker in enumerate(workers)]
        for spy in spies:
            spy.wait(timeout=args.seconds + 60)
        for n in range(len(workers)):
            samples += read_raw(scratch / f"worker-{n}.txt")
        for line in bench.stderr:
            progress.show(line.strip()[-100:])
        if bench.wait() != 0:
            raise RuntimeError(f"the bench failed (exit {bench.returncode})")
    finally:
        if bench.poll() is None:
            bench.terminate()
            bench.wait(timeout=60)
    (row,) = json.loads((results / "latest.json").read_text())
    return samples, row


def markdown(part_shares: dict[str, float], worker_us: float, row: dict[str, object]) -> str:
    lines = [
        f"{row['model']}, {row['workload']}, {row['workers']} worker(s), Kafka path: {row['applied_tps']:,.0f} applied "
        f"TPS, workers {worker_us:.1f} µs of CPU per decided transfer",
        "",
        "| part | share of the workers' samples | CPU µs per transfer |",
        "|---|---:|---:|",
    ]
    lines += [f"| {part} | {100 * share:.1f}% | {share * worker_us:.1f} |" for part, share in part_shares.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="concurrent")
    parser.add_argument("--workload", default="uniform")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of load")
    parser.add_argument("--skip", type=float, default=5.0, help="seconds of load before sampling starts")
    parser.add_argument("--seconds", type=int, default=20, help="seconds of sampling")
    parser.add_argument("--results-dir", default=str(PROJECT_ROOT / "bench" / "results"))
    args = parser.parse_args()
    progress = Progress("profile")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="profile-") as scratch:
        samples, row = profile(args, Path(scratch), progress)
    workers_cpu_s, _, _ = per_role(row["cpu_s"])  # type: ignore[arg-type]
    worker_us = 1e6 * workers_cpu_s / (int(row["applied"]) + int(row["rejected"]))  # type: ignore[call-overload]
    part_shares = shares(samples)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.profile " + " ".join(sys.argv[1:])
    (results_dir / "profile.md").write_text(f"Command: `{command.strip()}`\n\n{markdown(part_shares, worker_us, row)}")
    record = {"command": command.strip(), "run": row, "shares": part_shares, "samples": sum(samples.values())}
    (results_dir / "profile.json").write_text(json.dumps(record, indent=1))
    progress.done(f"{sum(samples.values()):,} samples in {time.monotonic() - started:.0f} s")
    print(markdown(part_shares, worker_us, row))


if __name__ == "__main__":
    main()
