"""What every benchmark shares: a run's settings and result, the accounts and workloads, the progress line, the
machine's description and the percentiles; the runners (`driver`, `layers`, `postgres_peer`, `soak`) import it."""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import TWO_PHASE
from payments_app.domain.commands import (
    ClientTransaction,
    Command,
    Deposit,
    PostReserved,
    Reserve,
    Transfer,
    VoidReserved,
)
from payments_app.domain.routing import CONCURRENT, decided_in, home_of

POLL_S = 0.05


CATCH_UP = "catch-up"


PATHS = ("kafka", "http", CATCH_UP)


@dataclass
class RunSettings:
    workload: str = "uniform"
    workers: int = 1
    accounts: int = 10_000
    partitions: int = 8
    duration_s: float = 20.0
    batch_size: int = 500
    in_flight_batches: int = 16  # concurrent senders: Kafka records in flight, or HTTP clients
    max_backlog: int = 20_000  # transfers sent but not yet decided: full speed of the system, not of a queue
    http_batch: int = 1  # transfers per HTTP request: 1 sends single objects, more sends arrays
    rate_tps: float = 0.0  # offered load in transfers per second; 0 sends as fast as the system takes them
    http_wait_s: float = 0.0  # HTTP path: each request waits for its decision (`?wait=`) up to this long
    opening_balance: int = 1_000_000
    model: str = "concurrent"
    path: str = "kafka"
    forge_credit: bool = False  # fault injection: credit money that no segment paid out, to prove the check fails
    catch_up_transfers: int = 1_000_000  # catch-up path: the backlog written before the workers start again
    #: the PostgreSQL peer runs first and last in a matrix ("first", "last"): the control for the machine's drift
    control: str = ""


@dataclass
class RunResult:
    model: str
    workload: str
    workers: int
    path: str
    duration_s: float
    submitted: int
    applied: int
    rejected: int
    applied_tps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    segment_moves: int
    invariants_ok: bool
    problems: list[str]
    cpu_s: dict[str, float]
    peak_rss_mb: dict[str, float]
    timeline: list[tuple[float, int]]
    settings: dict[str, Any] = field(default_factory=dict)
    audit_s: float = 0.0  # how long the last GET /audit took to answer
    refused: int = 0  # HTTP path: transfers not taken (429 or 503 answers, an array's `refused` items: back-pressure)
    #: the workers' own view (`WORKERS_VIEW`), without the harness's poll or the client's hops; per bucket, so
    #: within a bucket's width. Kafka path: a record's timestamp to its commit; HTTP path: a submission's arrival at
    #: its partition's owner to its decision; NaN for a catch-up (its workers restart, and their histograms)
    record_p50_ms: float = float("nan")
    record_p99_ms: float = float("nan")
    #: the machine's pace just before the run (`bench.pace`): CPU µs per transfer of the money rules alone
    pace_us: float = float("nan")
    #: Kafka path: transfers the generator built during the load, past those prepared before it (`driver.Records`)
    built_while_sending: int = 0


class Progress:
    """What the run is doing and how far it got."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.live = sys.stderr.isatty()
        self.last_line_at = 0.0

    def show(self, text: str) -> None:
        """A live line on a terminal; elsewhere (CI, logs) one line every few seconds."""
        if self.live:
            sys.stderr.write(f"\r\x1b[2K[{self.label}] {text}")
        elif time.monotonic() - self.last_line_at > 5:
            sys.stderr.write(f"[{self.label}] {text}\n")
            self.last_line_at = time.monotonic()
        sys.stderr.flush()

    def done(self, text: str) -> None:
        if self.live:
            sys.stderr.write(f"\r\x1b[2K[{self.label}] {text}\n")
        else:
            sys.stderr.write(f"[{self.label}] {text}\n")


HOT_ACCOUNT_FUNDS = 1_000  # the hot account opens with this many opening balances: a payroll account is well funded


def account_names(settings: RunSettings) -> list[str]:
    return [f"acct-{n}" for n in range(settings.accounts)]


def opening_balances(settings: RunSettings, accounts: list[str]) -> dict[str, int]:
    """Every account's opening balance; the hot one (accounts[0], payer or payee of half the hot workloads)'s
    is large enough that hot-payer measures paying, not running dry."""
    hot = settings.opening_balance * HOT_ACCOUNT_FUNDS
    return {account: hot if n == 0 else settings.opening_balance for n, account in enumerate(accounts)}


def pick_pair(settings: RunSettings, rng: random.Random, accounts: list[str]) -> tuple[str, str, int]:
    """Payer, payee and amount for one transfer of the chosen workload."""
    payer, payee = rng.sample(accounts, 2)
    amount = rng.randint(1, 1_000)
    if settings.workload == "hot-payee" and rng.random() < 0.5:
        payee = accounts[0] if payer != accounts[0] else accounts[1]
    elif settings.workload == "hot-payer" and rng.random() < 0.5:
        payer = accounts[0] if payee != accounts[0] else accounts[1]
    elif settings.workload == "overdraft" and rng.random() < 0.1:
        amount = settings.opening_balance * 2
    return payer, payee, amount


def id_in_partition(prefix: str, partition: int, settings: RunSettings) -> str:
    """A transaction id that the concurrent model routes to `partition` (ids pick the partition there)."""
    for attempt in range(100 * settings.partitions):
        tx_id = f"{prefix}-{attempt}"
        if decided_in(Deposit(tx_id, "", 1), settings.partitions, CONCURRENT) == partition:
            return tx_id
    raise AssertionError(f"no id with prefix {prefix!r} lands in partition {partition}")


def funding(settings: RunSettings, accounts: list[str]) -> dict[int, list[Command]]:
    """The opening deposits by partition: one per segment in the concurrent model, one at home in the baseline.

    Funding every segment is what a bank migrating balances in would do; funding one segment would make the
    first transfers of every account wait for moves and measure the reconciler instead of the model.
    """
    deposits: dict[int, list[Command]] = {p: [] for p in range(settings.partitions)}
    for account, balance in opening_balances(settings, accounts).items():
        if settings.model == CONCURRENT:
            share, remainder = divmod(balance, settings.partitions)
            for p in range(settings.partitions):
                amount = share + (1 if p < remainder else 0)
                if amount:
                    deposits[p].append(Deposit(id_in_partition(f"fund-{account}-{p}", p, settings), account, amount))
        else:
            deposits[home_of(account, settings.partitions)].append(Deposit(f"fund-{account}", account, balance))
    return deposits


#: the two-phase workload's reservations expire after this long: well past any run, so each is posted or voided
TWO_PHASE_TIMEOUT_S = 3_600


class TransferSource:
    """The workload's transfers, each routed to the partition its model decides it in, cut into batches.

    The two-phase workload sends half of its transfers as reservations; each is posted (in full or half of it) or
    voided (one in four) in the next batch of its partition, so both phases go through the system."""

    def __init__(self, settings: RunSettings, accounts: list[str], tag: str = "b") -> None:
        self.settings = settings
        self.accounts = accounts
        self.rng = random.Random(1)
        self.tag = tag  # runs that share a cluster need ids of their own: a reused id is a duplicate, not a transfer
        self.counter = 0
        self.pending: dict[int, list[ClientTransaction]] = {p: [] for p in range(settings.partitions)}
        self.second_phases: dict[int, list[Command]] = {p: [] for p in range(settings.partitions)}

    def next_transfer(self) -> Transfer | Reserve:
        self.counter += 1
        payer, payee, amount = pick_pair(self.settings, self.rng, self.accounts)
        tx_id = f"{self.tag}{self.counter}"
        if self.settings.workload == TWO_PHASE and self.rng.random() < 0.5:
            return Reserve(tx_id, payer, payee, amount, TWO_PHASE_TIMEOUT_S, time.time_ns() // 1_000_000)
        return Transfer(tx_id, payer, payee, amount)

    def next_batch(self, size: int) -> tuple[int, list[Command]]:
        """The first partition whose batch fills up with `size` transfers, and that batch (led by the second phases
        of the reservations in that partition's batch before: `transfers_in` counts the transfers alone)."""
        while True:
            transfer = self.next_transfer()
            partition = decided_in(transfer, self.settings.partitions, self.settings.model)
            batch = self.pending[partition]
            batch.append(transfer)
            if len(batch) >= size:
                self.pending[partition] = []
                earlier = self.second_phases[partition]
                self.second_phases[partition] = [self.second_phase(tx) for tx in batch if isinstance(tx, Reserve)]
                return partition, [*earlier, *batch]

    def second_phase(self, reservation: Reserve) -> Command:
        roll = self.rng.random()
        if roll < 0.25:
            return VoidReserved(reservation.id)
        return PostReserved(reservation.id, None if roll < 0.625 else max(1, reservation.amount // 2))


def transfers_in(batch: list[Command]) -> int:
    """The client transactions of a batch (decided once each), not the second phases it carries."""
    return sum(isinstance(command, ClientTransaction) for command in batch)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def process_usage(pids: dict[str, int]) -> tuple[dict[str, float], dict[str, float]]:
    cpu: dict[str, float] = {}
    rss: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            times = proc.cpu_times()
            cpu[name] = round(times.user + times.system, 2)
            rss[name] = round(peak_rss_bytes(pid) / 2**20, 1)
        except psutil.Error:
            continue
    return cpu, rss


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "mean_load_before": statistics.fmean(os.getloadavg()),
    }


def peak_rss_bytes(pid: int) -> int:
    """VmHWM from /proc: the process's peak resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0
