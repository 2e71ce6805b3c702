"""The benchmark: real broker, real `faust worker` processes, load straight onto the transactions topic.

One run: start what is needed, open and fund the accounts, drive transfers at full speed for a fixed time,
wait until everything is applied, then check the invariants over the whole ledger. Throughput is measured from
the offsets the workers report applied; latency is from a batch's acknowledgement by the broker to the first
progress poll that sees its offset applied (so it is rounded up to the poll interval).
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from payments_app.cluster import WorkerProcess
from payments_app.codec import encode_batch
from payments_app.domain.commands import Command, Deposit, MoveCredit, OpenAccount, Transfer
from payments_app.domain.money import partition_of
from payments_app.local_kafka import LocalKafka, configured_broker_url, free_port, parse_broker_url

POLL_S = 0.05
WORKLOADS = ("uniform", "hot-payee", "hot-payer", "overdraft")


@dataclass
class RunSettings:
    workload: str = "uniform"
    workers: int = 1
    accounts: int = 10_000
    partitions: int = 8
    duration_s: float = 20.0
    batch_size: int = 500
    in_flight_batches: int = 16
    max_backlog: int = 20_000  # transfers sent but not yet applied: full speed of the system, not of a queue
    opening_balance: int = 1_000_000
    model: str = "concurrent"
    path: str = "kafka"
    forge_credit: bool = False  # fault injection: credit money that no segment paid out, to prove the check fails


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


class Ledger:
    """The benchmark's side of the cluster: producing records, polling progress, reading the audit."""

    def __init__(self, broker_url: str, app_id: str, workers: list[WorkerProcess], partitions: int) -> None:
        self.topic = f"{app_id}-transactions"
        self.bootstrap = parse_broker_url(broker_url)
        self.workers = workers
        self.partitions = partitions
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Ledger:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2,
                                         max_request_size=8 * 2**20)  # fmt: skip
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await self.consumer.start()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.producer is not None and self.session is not None and self.consumer is not None
        await self.producer.stop()
        await self.consumer.stop()
        await self.session.close()

    async def send(self, partition: int, commands: list[Command]) -> int:
        """Send one record; return its offset once the broker acknowledged it."""
        assert self.producer is not None
        metadata = await self.producer.send_and_wait(self.topic, encode_batch(commands), partition=partition)
        return metadata.offset

    async def end_offsets(self) -> dict[int, int]:
        """The next offset to be written in each partition of the transactions topic."""
        assert self.consumer is not None
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        return {tp.partition: offset for tp, offset in (await self.consumer.end_offsets(tps)).items()}

    async def progress(self) -> tuple[dict[int, int], dict[str, int]]:
        """Applied offset per partition, and the workers' counters summed."""
        assert self.session is not None
        applied: dict[int, int] = {}
        totals: dict[str, int] = {}
        for worker in self.workers:
            async with self.session.get(f"{worker.url}/internal/progress") as response:
                body = await response.json()
            for partition, offset in body["applied"].items():
                applied[int(partition)] = max(applied.get(int(partition), -1), offset)
            for name, value in body["metrics"].items():
                totals[name] = totals.get(name, 0) + value
        return applied, totals

    async def audit(self) -> dict[str, Any]:
        assert self.session is not None
        async with self.session.get(f"{self.workers[0].url}/audit") as response:
            return await response.json()


async def open_and_fund(ledger: Ledger, settings: RunSettings, accounts: list[str], progress: Progress) -> int:
    """Open every account in every partition and deposit its opening balance; return the deposits made."""
    chunk = 2_000
    for start in range(0, len(accounts), chunk):
        opens: list[Command] = [OpenAccount(a, "bench") for a in accounts[start : start + chunk]]
        await asyncio.gather(*(ledger.send(p, opens) for p in range(settings.partitions)))
        progress.show(f"opening accounts {min(start + chunk, len(accounts))}/{len(accounts)}")
    deposits: dict[int, list[Command]] = {p: [] for p in range(settings.partitions)}
    for account in accounts:
        tx_id = f"fund-{account}"
        deposits[partition_of(tx_id, settings.partitions)].append(Deposit(tx_id, account, settings.opening_balance))
    await asyncio.gather(*(ledger.send(p, cmds) for p, cmds in deposits.items()))
    await wait_applied(ledger, progress, "funding")
    return len(accounts)


async def wait_applied(ledger: Ledger, progress: Progress, what: str, timeout_s: float = 600) -> None:
    """Wait until every partition has applied everything in it (its applied offset reaches the end)."""
    assert ledger.producer is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ends = await ledger.end_offsets()
        applied, _ = await ledger.progress()
        behind = sum(max(0, end - 1 - applied.get(p, -1)) for p, end in ends.items())
        progress.show(f"{what}: {behind} records still to apply")
        if behind == 0:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{what}: records still unapplied after {timeout_s} s")


async def drive_load(ledger: Ledger, settings: RunSettings, accounts: list[str], progress: Progress) -> dict:
    """Send transfer batches at full speed for duration_s; measure latency and throughput from progress."""
    rng = random.Random(1)
    sent: list[tuple[int, int, float, int]] = []  # (partition, offset, acked at, transfers)
    submitted = 0
    stop_at = time.monotonic() + settings.duration_s
    counter = 0

    async def lane() -> None:
        nonlocal submitted, counter
        while time.monotonic() < stop_at:
            if sum(item[3] for item in sent) >= settings.max_backlog:
                await asyncio.sleep(POLL_S)
                continue
            partition = rng.randrange(settings.partitions)
            batch: list[Command] = []
            while len(batch) < settings.batch_size:
                counter += 1
                tx_id = f"b{counter}"
                if partition_of(tx_id, settings.partitions) != partition:
                    continue
                payer, payee, amount = pick_pair(settings, rng, accounts)
                batch.append(Transfer(tx_id, payer, payee, amount))
            offset = await ledger.send(partition, batch)
            sent.append((partition, offset, time.monotonic(), len(batch)))
            submitted += len(batch)

    latencies: list[float] = []
    timeline: list[tuple[float, int]] = []
    started = time.monotonic()
    lanes = [asyncio.create_task(lane()) for _ in range(settings.in_flight_batches)]
    base: int | None = None
    while True:
        applied, totals = await ledger.progress()
        now = time.monotonic()
        decided = totals.get("transactions_applied_total", 0) + totals.get("transactions_rejected_total", 0)
        base = decided if base is None else base
        timeline.append((now - started, decided - base))
        still_pending = []
        for item in sent:
            if applied.get(item[0], -1) >= item[1]:
                latencies.extend([now - item[2]] * item[3])
            else:
                still_pending.append(item)
        sent[:] = still_pending
        elapsed = now - started
        rate = (decided - base) / elapsed if elapsed > 0 else 0.0
        progress.show(f"load {elapsed:5.1f}/{settings.duration_s:.0f} s, submitted {submitted}, "
                      f"decided {decided - base} ({rate:,.0f}/s), unapplied batches {len(sent)}")  # fmt: skip
        if all(task.done() for task in lanes) and not sent:
            break
        if elapsed > settings.duration_s + 600:
            raise TimeoutError("the workers did not catch up within 10 minutes of the load ending")
        await asyncio.sleep(POLL_S)
    for task in lanes:
        task.result()
    return {"submitted": submitted, "latencies": latencies, "timeline": timeline, "elapsed": time.monotonic() - started}


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


def peak_rss_bytes(pid: int) -> int:
    """VmHWM from /proc: the process's peak resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def run_once(settings: RunSettings, broker_url: str, broker_pid: int | None, scratch: Path) -> RunResult:
    """One benchmark run on a fresh app id (topics, group, changelog) against the given broker."""
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    label = f"{settings.model}/{settings.workload}/{settings.workers}w"
    progress = Progress(label)
    workers = [
        WorkerProcess(broker_url, scratch / app_id / f"worker-{n}", free_port(), settings.partitions,
                      extra_env={"PAYMENTS_APP_ID": app_id, "PAYMENTS_AUDIT_INTERVAL_S": "3600"})
        for n in range(settings.workers)
    ]  # fmt: skip
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            progress.show(f"waiting for worker {worker.url}")
            await asyncio.to_thread(worker.wait_ready)
        accounts = [f"acct-{n}" for n in range(settings.accounts)]
        async with Ledger(broker_url, app_id, workers, settings.partitions) as ledger:
            funded = await open_and_fund(ledger, settings, accounts, progress)
            if settings.forge_credit:
                await ledger.send(0, [MoveCredit(accounts[0], 1, 1, None, None)])
            _, before = await ledger.progress()
            load = await drive_load(ledger, settings, accounts, progress)
            await wait_applied(ledger, progress, "draining")
            audit = await ledger.audit()
            _, after = await ledger.progress()
        pids = {f"worker-{n}": w.pid for n, w in enumerate(workers) if w.pid}
        pids["load-generator"] = os.getpid()
        if broker_pid:
            pids["broker"] = broker_pid
        cpu, rss = process_usage(pids)
    finally:
        for worker in workers:
            worker.stop()
    applied = after["transactions_applied_total"] - before["transactions_applied_total"]
    rejected = after["transactions_rejected_total"] - before["transactions_rejected_total"]
    problems = list(audit.get("problems", []))
    if audit.get("in_flight") != 0:
        problems.append(f"money still in flight after draining: {audit.get('in_flight')}")
    expected_total = funded * settings.opening_balance
    if audit.get("balances") != expected_total or audit.get("deposits") != expected_total:
        problems.append(f"balances {audit.get('balances')} / deposits {audit.get('deposits')} != {expected_total}")
    if applied + rejected != load["submitted"]:
        problems.append(f"{load['submitted']} transfers submitted but {applied + rejected} decided")
    latencies_ms = [1000 * value for value in load["latencies"]]
    decided_in_window = [n for t, n in load["timeline"] if t <= settings.duration_s]
    result = RunResult(
        model=settings.model, workload=settings.workload, workers=settings.workers, path=settings.path,
        duration_s=round(load["elapsed"], 2), submitted=load["submitted"], applied=applied, rejected=rejected,
        applied_tps=round((decided_in_window[-1] if decided_in_window else 0) / settings.duration_s, 1),
        p50_ms=round(percentile(latencies_ms, 0.50), 1), p95_ms=round(percentile(latencies_ms, 0.95), 1),
        p99_ms=round(percentile(latencies_ms, 0.99), 1),
        segment_moves=after["segment_moves_total"] - before["segment_moves_total"],
        invariants_ok=not problems, problems=problems, cpu_s=cpu, peak_rss_mb=rss,
        timeline=[(round(t, 2), n) for t, n in load["timeline"]], settings=asdict(settings),
    )  # fmt: skip
    progress.done(f"{result.applied_tps:,.0f} applied/s, p50 {result.p50_ms} ms, p99 {result.p99_ms} ms, "
                  f"invariants {'ok' if result.invariants_ok else 'FAILED'}")  # fmt: skip
    return result


async def run_matrix(matrix: list[RunSettings], scratch: Path) -> list[RunResult]:
    """Run each setting in turn on one broker (ours unless BROKER_URL is set)."""
    configured = configured_broker_url()
    kafka: LocalKafka | None = None
    if configured is None:
        kafka = LocalKafka(scratch / "kafka", heap="1g")
        await asyncio.to_thread(kafka.start)
    broker_url = configured or kafka.url  # type: ignore[union-attr]
    try:
        return [await run_once(settings, broker_url, kafka.pid if kafka else None, scratch) for settings in matrix]
    finally:
        if kafka is not None:
            kafka.stop()


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "mean_load_before": statistics.fmean(os.getloadavg()),
    }
