"""Instructions per transfer of the in-process layers, counted by valgrind's callgrind: an A/B measure that this
shared machine does not move. CPU time here varies by a third from one run of the same code to the next, so
small changes to the rules or the codec cannot be told apart by `payments layers` or `payments bench`.

`python -m bench.instructions [--transfers N] [--layer domain|domain+codec]` builds the benchmark's workload for
one partition (not counted), then runs a child under callgrind twice: applying it once, and twice, each time into
a fresh state. The difference, per transfer, leaves out the start-up, the imports and the loading of the
workload. The garbage collector runs with the workers' thresholds. To compare two commits, run it from a
worktree of each with `PYTHONPATH=<worktree>`. Needs Debian's `valgrind`.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import Progress
from bench.layers import EncodedStore, MemoryStore, Workload, apply_records, build_workload
from payments_app.settings import SETTINGS
from tables.codec import decode_batch

LAYERS = ("domain", "domain+codec")
COLLECTED = re.compile(rb"Collected : (\d+)")


def apply_fresh(workload: Workload, layer: str) -> int:
    """Open, fund, then apply the transfers, into a state of its own (as `payments layers` times them); return
    how many transfers were applied."""
    if layer == "domain":
        store: MemoryStore | EncodedStore = MemoryStore()
        records, decode = workload.transfers, list
    else:
        data: dict[bytes, bytes] = {}
        store = EncodedStore(data.get, data.update)
        records, decode = workload.encoded, decode_batch  # type: ignore[assignment]
    apply_records(store, workload.seed, list, 0, lambda _: None)
    return apply_records(store, records, decode, len(workload.seed), lambda _: None)[1]  # type: ignore[arg-type]


def child(workload_path: Path, layer: str, times: int, gc_threshold: int) -> None:
    workload = pickle.loads(workload_path.read_bytes())
    gc.set_threshold(gc_threshold, 20, 20)
    for _ in range(times):
        apply_fresh(workload, layer)


def instructions(workload_path: Path, layer: str, times: int, gc_threshold: int) -> int:
    """The instructions callgrind counts for a child process that applies the workload `times` times."""
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m", "bench.instructions",
        "--child", str(workload_path), "--layer", layer, "--times", str(times), "--gc-threshold", str(gc_threshold),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    found = COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count: {done.stderr[-500:]!r}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--layer", choices=LAYERS, default="domain+codec")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--times", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--gc-threshold", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.layer, args.times, args.gc_threshold)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    gc_threshold = SETTINGS.gc_threshold  # the workers' own setting

    progress = Progress("instructions")
    workload = build_workload(args.transfers, args.accounts, progress)
    with tempfile.TemporaryDirectory(prefix="instructions-") as folder:
        path = Path(folder) / "workload.pickle"
        path.write_bytes(pickle.dumps(workload))
        progress.show(f"{args.layer}: under callgrind, applying {workload.count:,} transfers once (about a minute)")
        once = instructions(path, args.layer, 1, gc_threshold)
        progress.show(f"{args.layer}: under callgrind, applying them twice")
        twice = instructions(path, args.layer, 2, gc_threshold)
    per_transfer = (twice - once) / workload.count
    progress.done(f"{args.layer}: {per_transfer:,.0f} instructions per transfer ({workload.count:,} transfers, "
                  f"{args.accounts:,} accounts, opening and funding included)")  # fmt: skip


if __name__ == "__main__":
    main()
