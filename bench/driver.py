"""The benchmark: real broker, real `faust worker` processes, load onto the transactions topic or the HTTP API.

One run: start what is needed, open and fund the accounts, drive transfers at full speed for a fixed time,
wait until everything is applied, then check the invariants over the whole ledger. Throughput is counted from
the transactions the workers report decided. Latency on the Kafka path is from a batch's acknowledgement by
the broker to the first progress poll that sees its offset applied (so it is rounded up to the poll interval);
on the HTTP path, where wrk is the client (`bench.http_load`), it is wrk's: to the decision with `http_wait_s`
(`?wait=`), else to the acknowledgement (the 202).

The catch-up path measures the workers alone: the workers stop, the transfers are written onto the transactions
topic, and the clock runs from the first transfer the restarted workers decide to the last, so the load
generator's CPU is off the cores while they drain (how Kafka Streams applications are usually measured).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import shutil
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench.common import (
    CATCH_UP,
    POLL_S,
    Progress,
    RunResult,
    RunSettings,
    TransferSource,
    account_names,
    funding,
    opening_balances,
    percentile,
    pick_pair,
    process_usage,
    transfers_in,
)
from bench.http_load import POOL_TRANSFERS, WrkRun, run_wrk, write_pool
from devtools.cluster import WorkerProcess, new_admin_token
from devtools.local_kafka import free_port
from payments_app.domain.commands import Command, MoveCredit, OpenAccount
from payments_app.runtime.broker_waits import REQUEST_TIMEOUT_MS, until_answered
from payments_app.settings import bootstrap_servers
from tables.codec import encode_batch

#: the workers' own latency histogram, by path: a transactions record's timestamp to its commit; a client
#: submission's arrival at its partition's owner to its decision
WORKERS_VIEW = {"kafka": "payments_record_committed_seconds", "http": "payments_submission_decided_seconds"}
#: a catch-up whose decided count stands still this long has stopped (its start, restores included, takes seconds)
CATCH_UP_STALL_S = 180.0
#: at full speed, the Kafka path's records are built before the clock starts for this rate over the run (past it,
#: the senders build them as they go: `Records`)
PREPARED_TPS = 100_000


class Ledger:
    """The benchmark's side of the cluster: producing records, polling progress, reading the audit."""

    def __init__(self, broker_url: str, app_id: str, workers: list[WorkerProcess], partitions: int) -> None:
        self.topic = f"{app_id}-transactions"
        self.bootstrap = bootstrap_servers(broker_url)
        self.workers = workers
        self.partitions = partitions
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.session: aiohttp.ClientSession | None = None
        self.last_audit_s = 0.0

    async def __aenter__(self) -> Ledger:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2,
                                         max_request_size=8 * 2**20, request_timeout_ms=REQUEST_TIMEOUT_MS)  # fmt: skip
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, isolation_level="read_committed")
        await self.consumer.start()
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=180), headers=self.workers[0].admin_headers
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.producer is not None and self.session is not None and self.consumer is not None
        await self.producer.stop()
        await self.consumer.stop()
        await self.session.close()

    async def send(self, partition: int, commands: list[Command]) -> int:
        """Send one record; return its offset once the broker acknowledged it."""
        return await self.send_record(partition, encode_batch(commands))

    async def send_record(self, partition: int, payload: bytes) -> int:
        """Send one record already encoded (`encode_batch`); return its offset once the broker acknowledged it.
        While a broker does not answer it is sent again, as a gateway would (its transfers' ids make that safe)."""
        assert self.producer is not None
        producer = self.producer

        async def send() -> int:
            return (await producer.send_and_wait(self.topic, payload, partition=partition)).offset  # type: ignore[no-any-return]

        return await until_answered(send, f"sending a record to partition {partition}", producer.client)

    async def last_records(self) -> dict[int, int]:
        """The offset of the last committed record in each partition of the transactions topic (-1: none).

        Transaction markers and aborted records take offsets too (relays are written in transactions), so the
        log's end offset is not the last record a worker can apply: the tail is read to find it.
        """
        assert self.consumer is not None
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        ends = await self.consumer.end_offsets(tps)
        return {tp.partition: await self._last_record(tp, end) for tp, end in ends.items()}

    async def _last_record(self, tp: TopicPartition, end: int, tail: int = 256) -> int:
        assert self.consumer is not None
        self.consumer.assign([tp])
        while True:
            start = max(0, end - tail)
            self.consumer.seek(tp, start)
            last = -1
            while await self.consumer.position(tp) < end:
                fetched = await self.consumer.getmany(tp, timeout_ms=500)
                last = max([last, *(r.offset for r in fetched.get(tp, []) if r.offset < end)])
            if last >= 0 or start == 0:
                return last
            tail *= 4

    async def _from_each(self, path: str) -> list[bytes]:
        """Every worker's answer to a GET of `path` on its internal port, asked side by side (a busy worker delays
        only its own answer)."""

        async def ask(worker: WorkerProcess) -> bytes:
            assert self.session is not None
            async with self.session.get(f"{worker.internal_url}{path}") as response:
                return await response.read()

        return await asyncio.gather(*map(ask, self.workers))

    async def progress(self) -> tuple[dict[int, int], dict[str, int]]:
        """Applied offset per partition, and the workers' counters summed."""
        applied: dict[int, int] = {}
        totals: dict[str, int] = {}
        for body in map(orjson.loads, await self._from_each("/internal/progress")):
            for partition, offset in body["applied"].items():
                applied[int(partition)] = max(applied.get(int(partition), -1), offset)
            for name, value in body["metrics"].items():
                totals[name] = totals.get(name, 0) + value
        return applied, totals

    async def histogram(self, name: str) -> dict[float, float]:
        """The workers' histogram `name` (one without labels), summed: observations per upper bound (seconds,
        cumulative)."""
        buckets: dict[float, float] = {}
        for text in await self._from_each("/metrics"):
            for family in text_string_to_metric_families(text.decode()):
                for sample in family.samples if family.name == name else ():
                    if sample.name == f"{name}_bucket":
                        bound = float(sample.labels["le"])
                        buckets[bound] = buckets.get(bound, 0.0) + sample.value
        return buckets

    async def audit(self, attempts: int = 5) -> dict[str, Any]:
        """The whole ledger's audit; a failed audit is a problem of the run, not a crash of the benchmark."""
        assert self.session is not None
        answer = ""
        for _ in range(attempts):
            started = time.monotonic()
            async with self.session.get(f"{self.workers[0].url}/audit") as response:
                if response.status == 200:
                    self.last_audit_s = time.monotonic() - started
                    return await response.json()
                answer = f"{response.status}: {(await response.text())[:200]}"
            await asyncio.sleep(2)
        return {"problems": [f"the audit did not answer after {attempts} attempts (last: {answer})"]}


async def open_and_fund(ledger: Ledger, settings: RunSettings, accounts: list[str], progress: Progress) -> int:
    """Open every account in every partition and deposit its opening balance; return the money deposited."""
    chunk = 2_000
    for start in range(0, len(accounts), chunk):
        opens: list[Command] = [OpenAccount(a, "bench") for a in accounts[start : start + chunk]]
        await asyncio.gather(*(ledger.send(p, opens) for p in range(settings.partitions)))
        progress.show(f"opening accounts {min(start + chunk, len(accounts))}/{len(accounts)}")
    for partition, deposits in funding(settings, accounts).items():
        for start in range(0, len(deposits), chunk):
            await ledger.send(partition, deposits[start : start + chunk])
    await wait_applied(ledger, progress, "funding")
    return sum(opening_balances(settings, accounts).values())


async def wait_applied(ledger: Ledger, progress: Progress, what: str, timeout_s: float = 900) -> None:
    """Wait until every partition has applied everything in it (its applied offset reaches its last record)."""
    assert ledger.producer is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lasts = await ledger.last_records()
        applied, _ = await ledger.progress()
        behind = sum(max(0, last - applied.get(p, -1)) for p, last in lasts.items())
        progress.show(f"{what}: {behind} offsets still to apply")
        if behind == 0:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{what}: records still unapplied after {timeout_s} s")


class Load:
    """The counters shared by the senders and the progress loop."""

    def __init__(self, settings: RunSettings) -> None:
        self.settings = settings
        self.submitted = 0  # transfers handed to the producer (counted before their acknowledgement)
        self.acked = 0  # of those, the ones the broker acknowledged
        self.decided = 0  # since the load started, as last polled
        self.latencies: list[float] = []
        self.sent: list[tuple[int, int, float, int]] = []  # kafka path: (partition, offset, acked at, transfers)
        self.wrk: WrkRun | None = None  # http path: what wrk reported, once it ended
        self.started = time.monotonic()
        self.stop_at = self.started + settings.duration_s

    def running(self) -> bool:
        return time.monotonic() < self.stop_at

    def must_wait(self) -> bool:
        """Hold back while the system is behind by max_backlog, or when ahead of the offered rate."""
        if self.submitted - self.decided >= self.settings.max_backlog:
            return True
        rate = self.settings.rate_tps
        return rate > 0 and self.submitted >= rate * (time.monotonic() - self.started)


class Records:
    """The Kafka path's records, `(partition, encoded transfers, how many)`: those `prepare` built and encoded
    before the clock started, then new ones as they are sent.

    The load generator shares the workers' two cores: building and encoding a transfer as it is sent cost it about
    5 µs, a tenth of the system's CPU per transfer. Built beforehand, the generator only sends bytes during the load,
    as a gateway that forwards its clients' records would."""

    def __init__(self, source: TransferSource, batch_size: int) -> None:
        self.source = source
        self.batch_size = batch_size
        self.prepared: deque[tuple[int, bytes, int]] = deque()
        self.built_while_sending = 0  # transfers: past what was prepared, on the generator's CPU during the load

    def prepare(self, transfers: int, progress: Progress) -> None:
        """Build and encode records holding at least `transfers` transfers."""
        ready = 0
        while ready < transfers:
            partition, batch = self.source.next_batch(self.batch_size)
            count = transfers_in(batch)
            self.prepared.append((partition, encode_batch(batch), count))
            ready += count
            if len(self.prepared) % 200 == 0:
                progress.show(f"preparing the load's records: {ready:,}/{transfers:,} transfers")

    def next(self) -> tuple[int, bytes, int]:
        if self.prepared:
            return self.prepared.popleft()
        partition, batch = self.source.next_batch(self.batch_size)
        transfers = transfers_in(batch)
        self.built_while_sending += transfers
        return partition, encode_batch(batch), transfers


def transfers_to_prepare(settings: RunSettings) -> int:
    """Enough for the whole run at the offered rate (a little over), or at PREPARED_TPS at full speed."""
    rate = settings.rate_tps * 1.05 if settings.rate_tps > 0 else PREPARED_TPS
    return math.ceil(rate * settings.duration_s)


async def kafka_sender(ledger: Ledger, load: Load, records: Records) -> None:
    """A gateway's bulk submission: one record per batch, straight onto the transactions topic."""
    while load.running():
        if load.must_wait():
            await asyncio.sleep(0.005)
            continue
        partition, payload, transfers = records.next()
        # counted as it is offered, not once acknowledged: the other senders would otherwise all see room during
        # the round trip, and the offered rate came in bursts of one record per partition (8 at once, once a
        # second, at 4,000 TPS offered)
        load.submitted += transfers
        offset = await ledger.send_record(partition, payload)
        load.acked += transfers
        load.sent.append((partition, offset, time.monotonic(), transfers))


async def wrk_clients(ledger: Ledger, load: Load, accounts: list[str]) -> None:
    """The API's clients: wrk posting the workload's transfers to every worker (`bench.http_load`)."""
    settings = load.settings
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as scratch:
        pool = Path(scratch) / "pool.csv"
        write_pool(pool, [pick_pair(settings, rng, accounts) for _ in range(POOL_TRANSFERS)])
        load.wrk = await run_wrk([worker.url for worker in ledger.workers], ledger.workers[0].admin_token, pool,
                                 f"{uuid.uuid4().hex[:6]}-", clients=settings.in_flight_batches,
                                 duration_s=settings.duration_s, batch=settings.http_batch, rate_tps=settings.rate_tps,
                                 wait_s=settings.http_wait_s)  # fmt: skip
    load.submitted = load.wrk.accepted


async def drive_load(
    ledger: Ledger, settings: RunSettings, accounts: list[str], records: Records | None, progress: Progress
) -> dict:
    """Send transfers at full speed for duration_s (the Kafka path's `records`, the HTTP path's wrk clients);
    measure latency and throughput from progress."""
    load = Load(settings)
    timeline: list[tuple[float, int]] = []
    started = time.monotonic()
    if records is None:
        senders = [asyncio.create_task(wrk_clients(ledger, load, accounts))]
    else:
        senders = [asyncio.create_task(kafka_sender(ledger, load, records)) for _ in range(settings.in_flight_batches)]
    base: int | None = None
    while True:
        applied, totals = await ledger.progress()
        now = time.monotonic()
        # a duplicate is a harness bug, but it is settled too: counting it lets the run end and the check say so
        decided = sum(totals.get(f"transactions_{what}_total", 0) for what in ("applied", "rejected", "duplicate"))
        base = decided if base is None else base
        load.decided = decided - base
        timeline.append((now - started, load.decided))
        still_pending = []
        for item in load.sent:
            if applied.get(item[0], -1) >= item[1]:
                load.latencies.extend([now - item[2]] * item[3])
            else:
                still_pending.append(item)
        load.sent[:] = still_pending
        elapsed = now - started
        rate = load.decided / elapsed if elapsed > 0 else 0.0
        queued = (f"submitted {load.submitted}, backlog {load.submitted - load.decided}" if settings.path != "http"
                  else "wrk counts its requests when it ends")  # fmt: skip
        progress.show(
            f"load {elapsed:5.1f}/{settings.duration_s:.0f} s, decided {load.decided} ({rate:,.0f}/s), {queued}"
        )
        if all(task.done() for task in senders) and load.decided >= load.submitted and not load.sent:
            break
        if any(task.done() and task.exception() for task in senders):
            break
        if elapsed > settings.duration_s + 600:
            raise TimeoutError("the workers did not catch up within 10 minutes of the load ending")
        await asyncio.sleep(POLL_S)
    for task in senders:
        task.result()
    return {"submitted": load.submitted, "latencies": load.latencies, "timeline": timeline,
            "elapsed": time.monotonic() - started, "wrk": load.wrk}  # fmt: skip


async def drive_catch_up(
    ledger: Ledger, settings: RunSettings, accounts: list[str], pids: dict[str, int], progress: Progress
) -> dict[str, Any]:
    """Stop the workers, write `catch_up_transfers` transfers, start the workers again and time their drain.

    The clock starts once every worker has answered /health twice in a row (the group has settled: each owns its
    partitions, their sessions open) and stops once every transfer is decided and every record, the relays the
    transfers made included, is applied; what was decided before the clock started is left out. (Started at once,
    the first worker to join takes every partition and hands half back when the second joins.) A backlog drained
    before the group settled is timed, whole, from the last poll that saw nothing decided (or from the restart):
    a small backlog can drain between two polls. The CPU is the restarted workers' (`pids` is updated to them),
    from the clock's start (from the restart for a backlog drained before it).
    """
    await asyncio.gather(*(asyncio.to_thread(worker.stop) for worker in ledger.workers))
    source = TransferSource(settings, accounts, tag=f"{uuid.uuid4().hex[:6]}-")
    records = max(1, settings.catch_up_transfers // settings.batch_size)
    written = 0

    async def writer() -> None:
        nonlocal written
        while written < records * settings.batch_size:
            partition, batch = source.next_batch(settings.batch_size)
            written += transfers_in(batch)
            await ledger.send(partition, batch)
            progress.show(f"catch-up: writing the backlog {written:,}/{records * settings.batch_size:,}")

    await asyncio.gather(*(writer() for _ in range(settings.in_flight_batches)))
    for worker in ledger.workers:
        worker.start()
    for n, worker in enumerate(ledger.workers):
        pids[f"worker-{n}"] = worker.pid or 0
    timeline: list[tuple[float, int]] = []
    clock: tuple[float, int] | None = None  # (started at, decided then)
    nothing_decided_at = time.monotonic()
    cpu_before: dict[str, float] = {}
    healthy_polls = decided = 0
    progressed_at = time.monotonic()
    while decided < written:
        await asyncio.sleep(POLL_S)
        if time.monotonic() - progressed_at > CATCH_UP_STALL_S:
            stalled = f"{decided:,} of {written:,} decided, and no more for {CATCH_UP_STALL_S:.0f} s"
            raise TimeoutError(f"catch-up: {stalled}")
        try:
            _, totals = await ledger.progress()
        except aiohttp.ClientError:  # the restarted workers' web servers are not up yet
            continue
        now = time.monotonic()
        before, decided = decided, sum(totals.get(f"transactions_{what}_total", 0)
                                       for what in ("applied", "rejected", "duplicate"))  # fmt: skip
        if decided > before:
            progressed_at = now
        if not decided:
            nothing_decided_at = now
        if clock is None:
            healthy = await asyncio.gather(*(asyncio.to_thread(worker.healthy) for worker in ledger.workers))
            healthy_polls = healthy_polls + 1 if all(healthy) else 0
            if healthy_polls >= 2 and decided < written:
                clock = (now, decided)
                cpu_before, _ = process_usage(pids)
            progress.show(f"catch-up: {decided:,}/{written:,} decided while the group settles")
            continue
        timeline.append((now - clock[0], decided))
        rate = (decided - clock[1]) / (now - clock[0]) if now > clock[0] else 0.0
        progress.show(f"catch-up: {decided:,}/{written:,} decided ({rate:,.0f}/s)")
    if clock is None:  # drained before the group settled: its CPU is counted from the restart, startup included
        clock = (nothing_decided_at, 0)
    # every transfer is decided, but the relays they made (the baseline's credits to payees, collection moves)
    # may still be queued: that is work of this backlog too, so the clock stops when every record is applied
    await wait_applied(ledger, progress, "catch-up: applying the last relays")
    timeline.append((time.monotonic() - clock[0], decided))
    elapsed = timeline[-1][0]
    return {"submitted": written, "latencies": [], "timeline": timeline, "elapsed": elapsed,
            "applied_tps": (written - clock[1]) / elapsed if elapsed else 0.0, "cpu_before": cpu_before,
            "counters_before": dict.fromkeys(totals, 0)}  # fmt: skip


def bucket_percentile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile, in milliseconds, of what a cumulative histogram counted between two readings, interpolated
    linearly inside its bucket (as Prometheus' histogram_quantile does); NaN if it counted nothing."""
    bounds = sorted(after)
    counts = [after[bound] - before.get(bound, 0.0) for bound in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank = q * counts[-1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return 1000 * lower_bound
            return 1000 * (lower_bound + (bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-9))
        lower_bound, lower_count = bound, count
    return 1000 * lower_bound


def same_cluster(settings: RunSettings) -> tuple[Any, ...]:
    """Runs that differ only in workload, path or offered rate can share one funded cluster."""
    return (settings.model, settings.workers, settings.accounts, settings.partitions, settings.opening_balance,
            settings.forge_credit)  # fmt: skip


async def run_group(
    group: list[RunSettings], broker_url: str, broker_pid: int | None, scratch: Path, pace: Callable[[], float]
) -> list[RunResult]:
    """Runs on one cluster of workers (a fresh app id: topics, group, changelog), opened and funded once.

    Each run's invariants are checked over the whole ledger after it drains, so a later run also re-checks
    what the earlier ones left.
    """
    first = group[0]
    assert all(same_cluster(settings) == same_cluster(first) for settings in group), group
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    progress = Progress(f"{first.model}/{first.workers}w")
    admin_token = new_admin_token()
    workers = [
        WorkerProcess(broker_url, scratch / app_id / f"worker-{n}", free_port(), admin_token, first.partitions,
                      extra_env={"PAYMENTS_APP_ID": app_id, "PAYMENTS_AUDIT_INTERVAL_S": "3600",
                                 "PAYMENTS_MODEL": first.model})
        for n in range(first.workers)
    ]  # fmt: skip
    results = []
    try:
        for worker in workers:  # one at a time: the first creates the topics (see AppCluster.add_worker)
            worker.start()
            progress.show(f"waiting for worker {worker.url}")
            await asyncio.to_thread(worker.wait_ready)
        pids = {f"worker-{n}": w.pid or 0 for n, w in enumerate(workers)}
        pids["load-generator"] = os.getpid()
        if broker_pid:
            pids["broker"] = broker_pid
        accounts = account_names(first)
        async with Ledger(broker_url, app_id, workers, first.partitions) as ledger:
            funded = await open_and_fund(ledger, first, accounts, progress)
            if first.forge_credit:
                await ledger.send(0, [MoveCredit(accounts[0], 1, 1, None, None)])
            for settings in group:
                progress.label = f"{settings.model}/{settings.workload}/{settings.workers}w/{settings.path}"
                pace_us = await asyncio.to_thread(pace)
                results.append(await measure(ledger, settings, accounts, funded, pids, progress, pace_us))
    finally:
        for worker in workers:
            worker.stop()
    if all(result.invariants_ok for result in results):
        shutil.rmtree(scratch / app_id, ignore_errors=True)  # gigabytes of RocksDB; a failed run's stay for a look
    return results


async def measure(
    ledger: Ledger,
    settings: RunSettings,
    accounts: list[str],
    funded: int,
    pids: dict[str, int],
    progress: Progress,
    pace_us: float,
) -> RunResult:
    """Drive one workload, drain, audit; CPU is counted from the start of the load to the end of draining (the
    Kafka path's records are built before). `pace_us` is the machine's pace measured just before (`bench.pace`)."""
    records = None
    if settings.path == "kafka":
        records = Records(TransferSource(settings, accounts, tag=f"{uuid.uuid4().hex[:6]}-"), settings.batch_size)
        records.prepare(transfers_to_prepare(settings), progress)
    cpu_before, _ = process_usage(pids)
    _, before = await ledger.progress()
    view = WORKERS_VIEW.get(settings.path)  # a catch-up restarts the workers, and their histograms
    view_before = await ledger.histogram(view) if view else {}
    if settings.path == CATCH_UP:
        load = await drive_catch_up(ledger, settings, accounts, pids, progress)
        cpu_before, before = load["cpu_before"], load["counters_before"]
    else:
        load = await drive_load(ledger, settings, accounts, records, progress)
    audit = await settled_audit(ledger, progress)
    _, after = await ledger.progress()
    view_after = await ledger.histogram(view) if view else {}
    cpu_after, rss = process_usage(pids)
    cpu = {name: round(cpu_after[name] - cpu_before.get(name, 0.0), 2) for name in cpu_after}
    applied = after["transactions_applied_total"] - before["transactions_applied_total"]
    rejected = after["transactions_rejected_total"] - before["transactions_rejected_total"]
    problems = list(audit.get("problems", []))
    if audit.get("in_flight") != 0:
        problems.append(f"money still in flight after draining: {audit.get('in_flight')}")
    expected_total = funded  # reservations whose second phase the run did not send still hold theirs: `reserved`
    held = audit.get("balances", 0) + audit.get("reserved", 0)
    if held != expected_total or audit.get("deposits") != expected_total:
        problems.append(f"balances {audit.get('balances')} + reserved {audit.get('reserved')} / deposits "
                        f"{audit.get('deposits')} != {expected_total}")  # fmt: skip
    duplicates = after["transactions_duplicate_total"] - before["transactions_duplicate_total"]
    if duplicates:
        problems.append(f"{duplicates} transfers were duplicates of earlier ids")
    if applied + rejected != load["submitted"]:
        problems.append(f"{load['submitted']} transfers submitted but {applied + rejected} decided")
    latencies_ms = [1000 * value for value in load["latencies"]]
    wrk: WrkRun | None = load.get("wrk")
    if wrk is not None:
        cpu["wrk"] = wrk.cpu_s
        if wrk.timeouts or wrk.socket_errors:
            problems.append(f"wrk: {wrk.timeouts} requests timed out, {wrk.socket_errors} socket errors")
    latency = (wrk.p50_ms, wrk.p95_ms, wrk.p99_ms) if wrk else [percentile(latencies_ms, q) for q in (0.5, 0.95, 0.99)]
    decided_in_window = [n for t, n in load["timeline"] if t <= settings.duration_s]
    tps = load.get("applied_tps", (decided_in_window[-1] if decided_in_window else 0) / settings.duration_s)
    result = RunResult(
        model=settings.model, workload=settings.workload, workers=settings.workers, path=settings.path,
        duration_s=round(load["elapsed"], 2), submitted=load["submitted"], applied=applied, rejected=rejected,
        applied_tps=round(tps, 1),
        p50_ms=round(latency[0], 1), p95_ms=round(latency[1], 1), p99_ms=round(latency[2], 1),
        refused=wrk.requests * settings.http_batch - wrk.accepted if wrk else 0,
        segment_moves=after["segment_moves_total"] - before["segment_moves_total"],
        invariants_ok=not problems, problems=problems, cpu_s=cpu, peak_rss_mb=rss,
        timeline=[(round(t, 2), n) for t, n in load["timeline"]], settings=asdict(settings),
        audit_s=round(ledger.last_audit_s, 2), built_while_sending=records.built_while_sending if records else 0,
        record_p50_ms=round(bucket_percentile(view_before, view_after, 0.5), 1),
        record_p99_ms=round(bucket_percentile(view_before, view_after, 0.99), 1), pace_us=pace_us,
    )  # fmt: skip
    progress.done(f"{result.applied_tps:,.0f} applied/s, p50 {result.p50_ms} ms, p99 {result.p99_ms} ms "
                  f"(at the workers: p50 {result.record_p50_ms} ms, p99 {result.record_p99_ms} ms), "
                  f"invariants {'ok' if result.invariants_ok else 'FAILED'} (audit {result.audit_s} s, "
                  f"pace {pace_us} µs)")  # fmt: skip
    return result


async def settled_audit(ledger: Ledger, progress: Progress, timeout_s: float = 60) -> dict[str, Any]:
    """Drain, then audit; again while money is still in flight (the reconciler may have moved some between the
    drain and the audit, and its credit is then one relay away), up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        await wait_applied(ledger, progress, "draining")
        audit = await ledger.audit()
        if audit.get("in_flight") == 0 or time.monotonic() > deadline:
            return audit
        progress.show(f"audit: {audit.get('in_flight')} minor units in flight; draining again")
        await asyncio.sleep(0.5)
