"""The soak: a long history, then faults under load, then the invariants; results for RELIABILITY.md.

1. **History.** Two workers apply `history` transfers (Kafka path, full speed); the disk it takes is measured
   (the broker's topic folders and the workers' stores) and reported per million transfers.
2. **Restart and takeover.** A worker is SIGKILLed and started again (time until it is healthy, and until every
   partition decides a new transaction); a worker is stopped cleanly and its partitions taken over by the other
   (time until every partition decides again); a worker is SIGKILLed and not restarted (the group notices after
   the session timeout; the time is reported with the timeout it includes).
3. **Faults under load.** A steady offered load runs while workers are SIGKILLed at random moments and started
   again, the broker is SIGKILLed and restarted, and workers leave and join the group; after each leave or join
   the time until every partition decides a new transaction is measured.
4. **Invariants.** After the load drains: the audit is ok, balances equal deposits minus withdrawals, and the
   number of decided transactions equals the number of distinct ids submitted (none lost, none decided twice).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import Progress, RunSettings, TransferSource, account_names, funding, id_in_partition, machine
from bench.driver import Ledger, Load, Records, kafka_sender, open_and_fund, wait_applied
from devtools.cluster import WorkerProcess, new_admin_token
from devtools.local_kafka import LocalKafka, LocalKafkaCluster, free_port
from payments_app.domain.commands import Deposit

SESSION_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 120.0
EMPTY_VOLUME_READY_TIMEOUT_S = 900.0
ACCOUNTS = 10_000


#: the API's share of the load under faults: lanes each sending one array at a time, retried until taken
API_LANES, API_ARRAY, API_TRIES, API_RETRY_S = 2, 20, 3_000, 0.2


@dataclass
class SoakSettings:
    history: int = 1_000_000
    kills: int = 20
    leave_join_cycles: int = 20
    offered_tps: float = 3_000.0
    full_load_cycles: int = 5  # leave/join cycles while the load runs as fast as the workers take it
    partitions: int = 8
    seed: int = 7


@dataclass
class SoakResult:
    settings: dict[str, Any]
    history_tps: float = 0.0
    disk_bytes_per_million: dict[str, float] = field(default_factory=dict)
    clean_restart_to_healthy_s: float = 0.0
    restart_to_healthy_s: float = 0.0
    restart_to_deciding_s: float = 0.0
    takeover_after_leave_s: float = 0.0
    takeover_after_kill_s: float = 0.0
    empty_volume_to_healthy_s: float = 0.0  # a worker started on a new, empty data folder (a new PVC)
    worker_kills: int = 0
    broker_restarts: int = 0
    decide_after_change_s: list[float] = field(default_factory=list)
    decide_after_change_full_load_s: list[float] = field(default_factory=list)
    full_load_tps: float = 0.0
    api_submitted: int = 0  # transfers sent through the HTTP API during the faults (applied at their owner)
    watchdog_exits: int = 0
    unexpected_exits: list[int] = field(default_factory=list)  # exit codes of workers that stopped by themselves
    submitted_ids: int = 0
    decided: int = 0
    audit_ok: bool = False
    problems: list[str] = field(default_factory=list)


class Soak:
    def __init__(
        self, settings: SoakSettings, scratch: Path, kafka: LocalKafka | LocalKafkaCluster | None = None
    ) -> None:
        self.settings = settings
        self.scratch = scratch
        self.app_id = f"soak-{uuid.uuid4().hex[:8]}"
        self.progress = Progress("soak")
        self.rng = random.Random(settings.seed)
        self.kafka = kafka or LocalKafka(scratch / "kafka", heap="1g")
        self.workers: list[WorkerProcess] = []
        self.probes = 0
        self.admin_token = new_admin_token()
        self.result = SoakResult(settings=asdict(settings))

    def worker_env(self) -> dict[str, str]:
        return {"PAYMENTS_APP_ID": self.app_id, "PAYMENTS_AUDIT_INTERVAL_S": "3600",
                "PAYMENTS_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S)}  # fmt: skip

    def worker(self, n: int) -> WorkerProcess:
        return WorkerProcess(self.kafka.url, self.scratch / f"worker-{n}", free_port(), self.admin_token,
                             self.settings.partitions, self.worker_env())  # fmt: skip

    async def run(self) -> SoakResult:
        self.scratch.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.kafka.start)
        try:
            self.workers = [self.worker(0), self.worker(1)]
            for worker in self.workers:
                await asyncio.to_thread(worker.start().wait_ready)
            async with Ledger(self.kafka.url, self.app_id, self.workers, self.settings.partitions) as ledger:
                await self.soak(ledger)
        finally:
            for worker in self.workers:
                worker.stop()
            self.kafka.stop()
        return self.result

    async def soak(self, ledger: Ledger) -> None:
        run = RunSettings(accounts=ACCOUNTS, partitions=self.settings.partitions, duration_s=10**9)
        accounts = account_names(run)
        await open_and_fund(ledger, run, accounts, self.progress)
        source = TransferSource(run, accounts, tag="h")
        history = await self.history(ledger, run, source)
        self.measure_disk()
        await self.restart_and_takeover(ledger)
        faults = TransferSource(run, accounts, tag="f")
        steady = RunSettings(**{**asdict(run), "rate_tps": self.settings.offered_tps, "max_backlog": 10**12})
        supervisor = asyncio.create_task(self.supervise())
        try:
            under_faults = await self.faults_under_load(ledger, steady, faults)
            full_load = await self.leave_join_at_full_load(ledger, run, TransferSource(run, accounts, tag="g"))
            await wait_applied(ledger, self.progress, "draining", timeout_s=600)
        finally:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        funded = sum(len(deposits) for deposits in funding(run, accounts).values())
        self.result.submitted_ids = funded + history + under_faults + full_load + self.probes
        await self.check(ledger)

    async def history(self, ledger: Ledger, run: RunSettings, source: TransferSource) -> int:
        """Apply the history; returns the transfers sent."""
        load = Load(run)
        started = time.monotonic()

        async def sender() -> None:
            while load.submitted < self.settings.history:
                await kafka_sender_once(ledger, load, source)

        tasks = [asyncio.create_task(sender()) for _ in range(run.in_flight_batches)]
        while not all(task.done() for task in tasks):
            _, totals = await ledger.progress()
            load.decided = totals.get("transactions_applied_total", 0) + totals.get("transactions_rejected_total", 0)
            self.progress.show(f"history: {load.submitted:,}/{self.settings.history:,} submitted")
            await asyncio.sleep(0.5)
        await asyncio.gather(*tasks)
        await wait_applied(ledger, self.progress, "history", timeout_s=1800)
        self.result.history_tps = round(load.submitted / (time.monotonic() - started))
        self.progress.done(f"history: {load.submitted:,} transfers at {self.result.history_tps:,} TPS")
        return load.submitted

    def measure_disk(self) -> None:
        millions = self.settings.history / 1e6
        broker = {"changelog": 0, "transactions": 0}
        for folder in self.kafka.data_dir.rglob(f"{self.app_id}-*"):
            kind = "changelog" if "ledger-changelog" in folder.name else "transactions"
            broker[kind] += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        stores = sum(f.stat().st_size for w in self.workers for f in (w.data_dir / "ledger").rglob("*") if f.is_file())
        self.result.disk_bytes_per_million = {
            "broker_changelog": round(broker["changelog"] / millions),
            "broker_transactions": round(broker["transactions"] / millions),
            "worker_stores_both": round(stores / millions),
        }

    async def probe_all_partitions(
        self, ledger: Ledger, url_of: list[WorkerProcess], timeout_s: float = PROBE_TIMEOUT_S
    ) -> float:
        """Send a deposit to every partition; the seconds until all of them are decided."""
        started = time.monotonic()
        ids = []
        for partition in range(self.settings.partitions):
            self.probes += 1
            tx_id = id_in_partition(f"probe{self.probes}-", partition, RunSettings(partitions=self.settings.partitions))
            ids.append(tx_id)
            await ledger.send(partition, [Deposit(tx_id, "acct-0", 1)])
        assert ledger.session is not None
        while ids:
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"probes {ids} not decided within {timeout_s:.0f} s")
            worker = url_of[0]
            try:
                async with ledger.session.get(f"{worker.url}/transactions/{ids[0]}") as response:
                    body = await response.json(content_type=None)
                    if response.status == 200 and body["status"] != "pending":
                        ids.pop(0)
                        continue
            except OSError:
                pass
            await asyncio.sleep(0.05)
        return round(time.monotonic() - started, 2)

    async def restart_and_takeover(self, ledger: Ledger) -> None:
        first, second = self.workers
        second.stop()
        started = time.monotonic()
        await asyncio.to_thread(second.start().wait_ready)
        self.result.clean_restart_to_healthy_s = round(time.monotonic() - started, 2)
        await self.probe_all_partitions(ledger, [first])
        second.kill()
        started = time.monotonic()
        second.start()
        await asyncio.to_thread(second.wait_ready)
        self.result.restart_to_healthy_s = round(time.monotonic() - started, 2)
        self.result.restart_to_deciding_s = round(
            self.result.restart_to_healthy_s + await self.probe_all_partitions(ledger, [second]), 2
        )
        self.progress.done(f"restart: healthy after {self.result.restart_to_healthy_s} s, every partition deciding "
                           f"after {self.result.restart_to_deciding_s} s")  # fmt: skip
        second.stop()
        self.result.takeover_after_leave_s = await self.probe_all_partitions(ledger, [first])
        self.progress.done(f"takeover after a clean leave: {self.result.takeover_after_leave_s} s")
        await asyncio.to_thread(second.start().wait_ready)
        await self.probe_all_partitions(ledger, [first])
        second.kill()
        self.result.takeover_after_kill_s = await self.probe_all_partitions(ledger, [first])
        self.progress.done(f"takeover after a SIGKILL: {self.result.takeover_after_kill_s} s "
                           f"(session timeout {SESSION_TIMEOUT_S:.0f} s included)")  # fmt: skip
        await asyncio.to_thread(second.start().wait_ready)
        await self.restart_on_an_empty_volume(second)

    async def restart_on_an_empty_volume(self, worker: WorkerProcess) -> None:
        """A pod rescheduled onto a new volume: its partitions restore the whole changelog (what a Kubernetes
        startup probe must allow for)."""
        worker.stop()
        for path in worker.data_dir.iterdir():
            if path != worker.log_path:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        started = time.monotonic()
        await asyncio.to_thread(worker.start().wait_ready, EMPTY_VOLUME_READY_TIMEOUT_S)
        self.result.empty_volume_to_healthy_s = round(time.monotonic() - started, 2)
        self.progress.done(f"start on an empty volume: healthy after {self.result.empty_volume_to_healthy_s} s")

    async def faults_under_load(self, ledger: Ledger, run: RunSettings, source: TransferSource) -> int:
        """Faults while a steady load runs; returns the transfers sent."""
        load = Load(run)
        records = Records(source, run.batch_size)  # built as they go: the soak measures no CPU
        senders = [asyncio.create_task(kafka_sender(ledger, load, records)) for _ in range(4)]
        api_source = TransferSource(source.settings, source.accounts, tag="a")
        api_stop = asyncio.Event()
        api_senders = [asyncio.create_task(self.api_sender(ledger, api_source, api_stop)) for _ in range(API_LANES)]
        try:
            for n in range(self.settings.kills):
                victim = self.rng.choice(self.workers)
                await asyncio.sleep(self.rng.uniform(1.0, 6.0))
                victim.kill()
                self.result.worker_kills += 1
                await asyncio.sleep(self.rng.uniform(0.0, 2.0))
                await asyncio.to_thread(victim.start().wait_ready)
                self.progress.show(f"faults: worker kill {n + 1}/{self.settings.kills}")
            await asyncio.to_thread(self.kafka.kill)
            await asyncio.sleep(2)
            await asyncio.to_thread(self.kafka.start)
            self.result.broker_restarts += 1
            for worker in self.workers:
                await asyncio.to_thread(worker.wait_ready, 300)
            for n in range(self.settings.leave_join_cycles):
                self.result.decide_after_change_s.extend(await self.leave_and_join(ledger, n))
                self.progress.show(f"faults: leave/join {n + 1}/{self.settings.leave_join_cycles}")
        finally:
            load.stop_at = 0.0
            api_stop.set()
            await asyncio.gather(*senders, return_exceptions=True)
        self.result.api_submitted = sum(await asyncio.gather(*api_senders))
        self.result.watchdog_exits = sum(w.log_path.read_text(errors="replace").count("exiting for a restart")
                                         for w in self.workers)  # fmt: skip
        return load.submitted + self.result.api_submitted

    async def api_sender(self, ledger: Ledger, source: TransferSource, stop: asyncio.Event) -> int:
        """Arrays of transfers through the HTTP API, to a worker chosen at random, while the faults run; returns the
        transfers sent. Each array's items are sent again, with the same ids, until a worker has taken every one,
        so each id counts among those that must be decided once."""
        sent = 0
        while not stop.is_set():
            _, batch = source.next_batch(API_ARRAY)
            items = [{"id": t.id, "payer": t.payer, "payee": t.payee, "amount": t.amount} for t in batch]
            await self.until_taken(ledger, items)
            sent += len(items)
        return sent

    async def until_taken(self, ledger: Ledger, items: list[dict[str, Any]]) -> None:
        assert ledger.session is not None
        waiting = items
        for _ in range(API_TRIES):
            worker = self.rng.choice([w for w in self.workers if w.process is not None] or self.workers)
            try:
                async with ledger.session.post(f"{worker.url}/transfers", json=waiting) as response:
                    status, body = response.status, await response.json(content_type=None)
            except (OSError, TimeoutError, aiohttp.ClientError):
                status, body = 0, None
            if status in (200, 202):
                conflicts = [item for item in body if item["status"] == "conflict"]
                if conflicts:
                    self.result.problems.append(f"an id sent again answered as a conflict: {conflicts[0]}")
                refused = {item["id"] for item in body if item["status"] == "refused"}
                waiting = [item for item in waiting if item["id"] in refused]
                if not waiting:
                    return
            elif status not in (0, 429, 503):
                raise RuntimeError(f"{worker.url}/transfers answered {status}: {body}")
            await asyncio.sleep(API_RETRY_S)
        raise TimeoutError(f"no worker took {len(waiting)} transfers in {API_TRIES} tries")

    async def leave_and_join(self, ledger: Ledger, cycle: int) -> list[float]:
        """One worker leaves cleanly, then joins again; the seconds until every partition decides after each."""
        leaver, stayer = self.workers[cycle % 2], self.workers[(cycle + 1) % 2]
        leaver.stop()
        after_leave = await self.probe_all_partitions(ledger, [stayer])
        await asyncio.to_thread(leaver.start().wait_ready)
        return [after_leave, await self.probe_all_partitions(ledger, [leaver])]

    async def leave_join_at_full_load(self, ledger: Ledger, run: RunSettings, source: TransferSource) -> int:
        """Leave/join cycles while the load runs as fast as the workers take it (the probes then queue behind up
        to `max_backlog` transfers); returns the transfers sent."""
        load = Load(run)
        records = Records(source, run.batch_size)  # built as they go: the soak measures no CPU
        senders = [asyncio.create_task(kafka_sender(ledger, load, records)) for _ in range(run.in_flight_batches)]
        tracker = asyncio.create_task(track_backlog(ledger, load))
        started = time.monotonic()
        try:
            await asyncio.sleep(5)
            for n in range(self.settings.full_load_cycles):
                self.result.decide_after_change_full_load_s.extend(await self.leave_and_join(ledger, n))
                self.progress.show(f"full load: leave/join {n + 1}/{self.settings.full_load_cycles}")
        finally:
            load.stop_at = 0.0
            tracker.cancel()
            await asyncio.gather(*senders, tracker, return_exceptions=True)
        self.result.full_load_tps = round(load.submitted / (time.monotonic() - started))
        return load.submitted

    async def supervise(self) -> None:
        """Restart a worker that exits by itself, as Kubernetes would, and remember that it did (from the faults to
        the end of the drain, so that an exit is reported as one, not as a worker that cannot be reached)."""
        while True:
            for worker in self.workers:
                code = await asyncio.to_thread(worker.restart_if_exited)
                if code is not None:
                    self.result.unexpected_exits.append(code)
            await asyncio.sleep(0.5)

    async def check(self, ledger: Ledger) -> None:
        audit = await ledger.audit()
        self.result.audit_ok = bool(audit.get("ok"))
        self.result.problems.extend(audit.get("problems", []))
        self.result.decided = sum(item["meta"].get("decided", 0) for item in audit.get("partitions", []))
        if audit.get("in_flight", 0) != 0:
            self.result.problems.append(f"money still in flight after draining: {audit.get('in_flight')}")
        if self.result.decided != self.result.submitted_ids:
            self.result.problems.append(
                f"{self.result.decided} transactions decided, {self.result.submitted_ids} distinct ids submitted"
            )
        if self.result.unexpected_exits:
            self.result.problems.append(f"workers exited by themselves with codes {self.result.unexpected_exits}")
        slow = [s for s in self.result.decide_after_change_s + self.result.decide_after_change_full_load_s if s > 10]
        if slow:
            self.result.problems.append(f"{len(slow)} leave/join changes took over 10 s to decide again: {slow}")


async def track_backlog(ledger: Ledger, load: Load) -> None:
    """Count a sent record as decided once its partition's applied offset passes it, as far as the workers that
    answer know (the senders hold back at `max_backlog`); unlike the workers' counters, this survives restarts."""
    assert ledger.session is not None
    while True:
        applied: dict[int, int] = {}
        for worker in ledger.workers:
            try:
                async with ledger.session.get(f"{worker.internal_url}/internal/progress") as response:
                    body = await response.json()
            except (OSError, TimeoutError, aiohttp.ClientError):
                continue
            for partition, offset in body["applied"].items():
                applied[int(partition)] = max(applied.get(int(partition), -1), offset)
        load.sent[:] = [item for item in load.sent if applied.get(item[0], -1) < item[1]]
        load.decided = load.acked - sum(item[3] for item in load.sent)  # a record not acknowledged yet is not decided
        await asyncio.sleep(0.2)


async def kafka_sender_once(ledger: Ledger, load: Load, source: TransferSource) -> None:
    partition, batch = source.next_batch(load.settings.batch_size)
    await ledger.send(partition, list(batch))
    load.submitted += len(batch)


def publish(result: Any, table: str, results_dir: Path, name: str, scratch: Path) -> int:
    """A soak phase's result (a dataclass) as `{name}.json`, with the machine, and its table as `{name}.md`, printed
    too; its scratch (logs, stores) is kept only when it failed. Returns the exit code: 0 when it passed."""
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = {"machine": {**machine(), "pid": os.getpid()}, "result": asdict(result)}
    (results_dir / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (results_dir / f"{name}.md").write_text(table + "\n")
    print(table)
    ok = result.audit_ok and not result.problems
    if ok:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok else 1


def summary(result: SoakResult) -> str:
    changes = result.decide_after_change_s
    full = result.decide_after_change_full_load_s
    lines = [
        "| figure | value |",
        "|---|---:|",
        f"| history applied (Kafka path, 2 workers) | {result.settings['history']:,} transfers at "
        f"{result.history_tps:,.0f} TPS |",
        *(f"| disk per million transfers: {name.replace('_', ' ')} | {value / 2**20:,.0f} MiB |"
          for name, value in result.disk_bytes_per_million.items()),
        f"| clean stop + start: healthy again | {result.clean_restart_to_healthy_s} s |",
        f"| SIGKILL + restart: healthy again (static membership: the new incarnation takes the dead one's place) | "
        f"{result.restart_to_healthy_s} s |",
        f"| SIGKILL + restart: every partition deciding | {result.restart_to_deciding_s} s |",
        f"| clean leave: the other worker deciding every partition | {result.takeover_after_leave_s} s |",
        f"| SIGKILL, no restart: the other worker deciding every partition (incl. {SESSION_TIMEOUT_S:.0f} s "
        f"session timeout) | {result.takeover_after_kill_s} s |",
        f"| start on a new, empty volume: healthy again (the whole changelog of its partitions restored) | "
        f"{result.empty_volume_to_healthy_s} s |",
        f"| worker SIGKILLs under load / broker SIGKILL+restarts | {result.worker_kills} / {result.broker_restarts} |",
        f"| leave/join changes: every partition deciding again, max (median) | "
        f"{max(changes, default=0)} s ({sorted(changes)[len(changes) // 2] if changes else 0} s) over "
        f"{len(changes)} changes |",
        f"| leave/join changes at full load ({result.full_load_tps:,.0f} TPS sent): every partition deciding "
        f"again, max (median) | {max(full, default=0)} s ({sorted(full)[len(full) // 2] if full else 0} s) over "
        f"{len(full)} changes |",
        f"| watchdog exits; workers that exited by themselves (codes) | {result.watchdog_exits}; "
        f"{result.unexpected_exits or 'none'} |",
        f"| transfers sent through the HTTP API during the faults (each array again until taken) | "
        f"{result.api_submitted:,} |",
        f"| distinct ids submitted / decided | {result.submitted_ids:,} / {result.decided:,} |",
        f"| audit ok, problems | {result.audit_ok}, {result.problems or 'none'} |",
    ]  # fmt: skip
    return "\n".join(lines)


def run_soak(settings: SoakSettings, scratch: Path, results_dir: Path) -> int:
    result = asyncio.run(Soak(settings, scratch).run())
    return publish(result, summary(result), results_dir, "soak", scratch)
