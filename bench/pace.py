"""The machine's pace: CPU µs per transfer of the money rules alone, timed in the load generator just before each
run.

These two shared cores drift by up to half their speed within an hour (BENCHMARKS.md, sessions 13-16): the same
code's PostgreSQL rows fell from 8,131 to 3,790 TPS between two matrices, with about as much CPU per run. Each row
records the pace it ran at, so that a reader can tell a matrix run in a slow hour. The probe moves by a tenth or
more from one measure to the next, so it tells a machine at half speed, not one at 90%: it corrects nothing.
"""

from __future__ import annotations

import gc
import math
import time

import psutil

from bench.common import Progress
from bench.layers import MemoryStore, Workload, apply_records, build_workload

#: under a second a measure; with rounds of 5,000 transfers (30 ms) the best of three moved by a quarter from
#: one measure to the next, with these by about a tenth either way
PROBE_TRANSFERS = 20_000
PROBE_ACCOUNTS = 2_000
#: the best of a few rounds: a round that a burst of other work interrupted is not the machine's pace
ROUNDS = 5
#: measured once the machine is this idle (share of all cores over QUIET_WINDOW_S), or after QUIET_WAIT_S: right
#: after a run drains, the workers still flush and compact for seconds, and a probe then read up to 9.6 µs between
#: runs that read 5-6.5
QUIET_SHARE = 0.2
QUIET_WINDOW_S = 0.5
QUIET_WAIT_S = 30.0


class Pace:
    """Times the money rules on a small fixed workload, built once."""

    def __init__(
        self,
        transfers: int = PROBE_TRANSFERS,
        accounts: int = PROBE_ACCOUNTS,
        rounds: int = ROUNDS,
        quiet_wait_s: float = QUIET_WAIT_S,
    ) -> None:
        self._size = (transfers, accounts)
        self._rounds = rounds
        self._quiet_wait_s = quiet_wait_s
        self._workload: Workload | None = None

    def measure(self) -> float:
        """This thread's CPU µs per transfer applied, the best of the rounds' fresh applications, once the machine
        is quiet. Blocks for up to `quiet_wait_s` and a second: call it in a thread where an event loop runs."""
        if self._workload is None:
            self._workload = build_workload(*self._size, Progress("pace"))
        wait_until_quiet(self._quiet_wait_s)
        workload, best = self._workload, math.inf
        gc.collect()
        gc.disable()  # the collector's work depends on what else this process holds, not on the machine
        try:
            for _ in range(self._rounds):
                store = MemoryStore()
                apply_records(store, workload.seed, list, 0, lambda _: None)
                started = time.thread_time()
                applied = apply_records(store, workload.transfers, list, len(workload.seed), lambda _: None)[1]
                best = min(best, 1e6 * (time.thread_time() - started) / applied)
        finally:
            gc.enable()
        return round(best, 2)


def wait_until_quiet(at_most_s: float) -> float:
    """Wait until the cores are mostly idle (other processes' work slows the probe), at most `at_most_s`; return
    how long it waited."""
    started = time.monotonic()
    while time.monotonic() - started < at_most_s:
        if psutil.cpu_percent(interval=QUIET_WINDOW_S) < 100 * QUIET_SHARE:
            break
    return time.monotonic() - started
