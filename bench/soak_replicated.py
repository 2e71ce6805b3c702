"""The soak's three-broker phase: the faults only replication survives, under load; results for RELIABILITY.md.

Three local Kafka nodes (`LocalKafkaCluster`: every topic on all three, a write acknowledged once two have it) and
two workers apply a steady offered load (1,000 transfers/s on the Kafka path, and arrays through the API), while
one after another:
1. the node that leads most of the app's partitions is SIGKILLed, then started again with the same command line;
2. a node is SIGSTOPped past its session with the controller, then resumed: a stale leader that comes back;
3. two nodes are SIGKILLed at once: no write can reach two replicas, so the API answers 503 with Retry-After; then
   one is started again (writes go on), then the other;
4. a worker and the node leading most of the partitions are SIGKILLed together, then both started again.
After each step, and after each node comes back, the time until every partition decides a new transaction (a
probe deposit to each) is recorded. After the load drains: the audit is ok, and every id submitted was decided once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka.admin import AIOKafkaAdminClient

from bench.common import RunSettings, TransferSource, account_names, funding
from bench.driver import Ledger, Load, Records, kafka_sender, open_and_fund, wait_applied
from bench.soak import API_LANES, Soak, SoakSettings, publish
from devtools.local_kafka import LocalKafka, LocalKafkaCluster
from payments_app.runtime.faust_fixes import refresh_metadata_after_timeouts

#: KRaft's broker.session.timeout.ms (9 s) and then some: the controller has fenced the paused node by then
PAUSE_S = 15.0
#: how long the two-node outage lasts before one node is started again
OUTAGE_S = 20.0
#: how long after the two nodes die the API must be answering 503 (its commits time out and it says so)
UNAVAILABLE_WITHIN_S = 60.0
IN_SYNC_TIMEOUT_S = 180.0
#: how long a step may keep the partitions from deciding before the phase fails: a hung node took 49-113 s, once
#: over 120 s (every client meets it by its own request timeout, and the group rebalances more than once)
DECIDING_AGAIN_TIMEOUT_S = 300.0
ACCOUNTS = 2_000
#: the steady load offered throughout: three Kafka nodes share the two cores with the workers
OFFERED_TPS = 1_000.0


@dataclass
class ReplicatedResult:
    """Seconds until every partition decides again, per fault and per node coming back; what the API answered while
    two nodes were down; the invariants."""

    decide_after_s: dict[str, float] = field(default_factory=dict)
    outage_answers: dict[str, int] = field(default_factory=dict)  # HTTP status (and "503 with Retry-After") -> count
    outage_slowest_answer_s: float = 0.0  # the longest any of those requests waited for its answer
    submitted_ids: int = 0
    decided: int = 0
    audit_ok: bool = False
    problems: list[str] = field(default_factory=list)


class ReplicatedSoak(Soak):
    """The soak's machinery (probes, API senders, the supervisor, the final check) on three Kafka nodes."""

    def __init__(self, settings: SoakSettings, scratch: Path) -> None:
        super().__init__(settings, scratch, LocalKafkaCluster(scratch / "kafka-3"))
        self.replicated = ReplicatedResult()
        refresh_metadata_after_timeouts()  # the load's producer, like the workers' clients

    def worker_env(self) -> dict[str, str]:
        return {**super().worker_env(), "PAYMENTS_REPLICATION_FACTOR": "3"}

    async def soak(self, ledger: Ledger) -> None:
        run = RunSettings(accounts=ACCOUNTS, partitions=self.settings.partitions, duration_s=10**9)
        accounts = account_names(run)
        await open_and_fund(ledger, run, accounts, self.progress)
        steady = RunSettings(**{**asdict(run), "rate_tps": OFFERED_TPS, "max_backlog": 10**12})
        load = Load(steady)
        records = Records(TransferSource(steady, accounts, tag="r"), steady.batch_size)
        senders = [asyncio.create_task(kafka_sender(ledger, load, records)) for _ in range(4)]
        api_stop = asyncio.Event()
        api_source = TransferSource(steady, accounts, tag="ra")
        api_senders = [asyncio.create_task(self.api_sender(ledger, api_source, api_stop)) for _ in range(API_LANES)]
        supervisor = asyncio.create_task(self.supervise())
        try:
            await asyncio.sleep(3)
            await self.leader_killed(ledger)
            await self.node_paused(ledger)
            await self.two_nodes_killed(ledger)
            await self.worker_and_leader_killed(ledger)
        finally:
            load.stop_at = 0.0
            api_stop.set()
            await asyncio.gather(*senders, return_exceptions=True)
        api_submitted = sum(await asyncio.gather(*api_senders))
        try:
            await wait_applied(ledger, self.progress, "draining", timeout_s=600)
        finally:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        funded = sum(len(deposits) for deposits in funding(run, accounts).values())
        self.result.submitted_ids = funded + load.submitted + api_submitted + self.probes
        await self.check(ledger)
        self.replicated.submitted_ids, self.replicated.decided = self.result.submitted_ids, self.result.decided
        self.replicated.audit_ok = self.result.audit_ok
        self.replicated.problems = self.result.problems

    async def decides_again(self, ledger: Ledger, what: str) -> None:
        live = [w for w in self.workers if w.process is not None]
        seconds = await self.probe_all_partitions(ledger, live, DECIDING_AGAIN_TIMEOUT_S)
        self.replicated.decide_after_s[what] = seconds
        self.progress.done(f"{what}: every partition deciding after {seconds} s")

    async def leader_killed(self, ledger: Ledger) -> None:
        node = await self.busiest_leader()
        node.kill()
        await self.decides_again(ledger, f"node {node.node_id} (most leaders) SIGKILLed")
        await asyncio.to_thread(node.start)
        await self.in_sync()
        await self.decides_again(ledger, f"node {node.node_id} started again, back in sync")

    async def node_paused(self, ledger: Ledger) -> None:
        node = await self.busiest_leader()
        paused_at = time.monotonic()
        node.pause()
        await self.decides_again(ledger, f"node {node.node_id} (most leaders) SIGSTOPped")
        await asyncio.sleep(max(0.0, paused_at + PAUSE_S - time.monotonic()))
        node.resume()
        await self.in_sync()
        await self.decides_again(ledger, f"node {node.node_id} resumed after {PAUSE_S:.0f} s, back in sync")

    async def two_nodes_killed(self, ledger: Ledger) -> None:
        first, second = self.kafka.nodes[1], self.kafka.nodes[2]
        first.kill()
        second.kill()
        refused = await self.answers_unavailable(ledger)
        await asyncio.to_thread(first.start)
        await self.decides_again(ledger, f"two nodes SIGKILLed, node {first.node_id} started again")
        await asyncio.to_thread(second.start)
        await self.in_sync()
        await self.decides_again(ledger, f"two nodes SIGKILLed, node {second.node_id} started again too, back in sync")
        await self.count_decided(ledger, refused)

    async def worker_and_leader_killed(self, ledger: Ledger) -> None:
        node, worker = await self.busiest_leader(), self.workers[0]
        worker.kill()
        node.kill()
        await self.decides_again(ledger, f"worker 0 and node {node.node_id} (most leaders) SIGKILLed")
        await asyncio.to_thread(worker.start().wait_ready)
        await asyncio.to_thread(node.start)
        await self.in_sync()
        await self.decides_again(ledger, f"both started again, node {node.node_id} back in sync")

    async def answers_unavailable(self, ledger: Ledger) -> list[str]:
        """Transfers posted, one at a time, for OUTAGE_S while two nodes are down (until UNAVAILABLE_WITHIN_S if no
        503 with Retry-After has come by then), counted by answer; returns the ids not taken (a refused one may
        still have reached its owner's commit, whose outcome was unknown)."""
        assert ledger.session is not None
        started, refused = time.monotonic(), []
        while time.monotonic() - started < UNAVAILABLE_WITHIN_S:
            asked = sum(self.replicated.outage_answers.values())
            tx_id, worker = f"outage-{asked}", self.workers[asked % 2]
            body = {"id": tx_id, "payer": "acct-1", "payee": "acct-2", "amount": 1}
            asked_at = time.monotonic()
            try:
                async with ledger.session.post(f"{worker.url}/transfers", json=body) as response:
                    answer = str(response.status)
                    if response.status == 503 and response.headers.get("Retry-After"):
                        answer = "503 with Retry-After"
            except (OSError, TimeoutError, aiohttp.ClientError) as exc:
                answer = type(exc).__name__
            waited_s = round(time.monotonic() - asked_at, 2)
            self.replicated.outage_slowest_answer_s = max(self.replicated.outage_slowest_answer_s, waited_s)
            self.replicated.outage_answers[answer] = self.replicated.outage_answers.get(answer, 0) + 1
            if answer in ("202", "200"):
                self.probes += 1  # taken: it must be decided once, like every id
            else:
                refused.append(tx_id)
            if "503 with Retry-After" in self.replicated.outage_answers and time.monotonic() - started >= OUTAGE_S:
                return refused
            await asyncio.sleep(0.5)
        self.replicated.problems.append(f"no 503 with Retry-After within {UNAVAILABLE_WITHIN_S:.0f} s of two nodes "
                                        f"going down: {self.replicated.outage_answers}")  # fmt: skip
        return refused

    async def count_decided(self, ledger: Ledger, ids: list[str]) -> None:
        """Count among the ids that must be decided once those of `ids` the ledger knows after all."""
        assert ledger.session is not None
        for tx_id in ids:
            async with ledger.session.get(f"{self.workers[1].url}/transactions/{tx_id}") as response:
                self.probes += response.status == 200

    async def busiest_leader(self) -> LocalKafka:
        """The node leading the most partitions of the app's topics."""
        leaders: Counter[int] = Counter()
        for topic in await self.describe([f"{self.app_id}-transactions", f"{self.app_id}-ledger-changelog-v4"]):
            leaders.update(partition["leader"] for partition in topic["partitions"])
        return self.kafka.node(leaders.most_common(1)[0][0])  # type: ignore[attr-defined, no-any-return]

    async def in_sync(self) -> None:
        """Wait until every partition of every topic, Kafka's own included, has all three replicas in sync."""
        deadline = time.monotonic() + IN_SYNC_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                topics = await self.describe(None)
            except Exception:  # noqa: BLE001 - a node still starting: ask again
                topics = []
            lagging = [t["topic"] for t in topics for p in t["partitions"] if len(p["isr"]) < len(p["replicas"])]
            if topics and not lagging:
                return
            await asyncio.sleep(1)
        raise TimeoutError(f"replicas not back in sync within {IN_SYNC_TIMEOUT_S:.0f} s")

    async def describe(self, topics: list[str] | None) -> list[dict[str, Any]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka.bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            return await admin.describe_topics(topics)  # type: ignore[no-any-return]
        finally:
            await admin.close()


def summary(result: ReplicatedResult) -> str:
    lines = [
        "| three Kafka nodes, 2 workers, a steady load (Kafka path and API) | value |",
        "|---|---:|",
        *(f"| {what}: every partition deciding again | {s} s |" for what, s in result.decide_after_s.items()),
        f"| the API's answers to new transfers while two nodes were down | "
        f"{', '.join(f'{answer}: {count}' for answer, count in result.outage_answers.items()) or 'none'} |",
        f"| the longest any of them waited for its answer | {result.outage_slowest_answer_s} s |",
        f"| distinct ids submitted / decided | {result.submitted_ids:,} / {result.decided:,} |",
        f"| audit ok, problems | {result.audit_ok}, {result.problems or 'none'} |",
    ]  # fmt: skip
    return "\n".join(lines)


def run_replicated_soak(settings: SoakSettings, scratch: Path, results_dir: Path) -> int:
    """The phase on its own cluster; results in `results_dir/soak-replicated.{json,md}`."""
    soak = ReplicatedSoak(settings, scratch)
    try:
        asyncio.run(soak.run())
    except Exception as exc:  # noqa: BLE001 - a phase that cannot finish is reported, with its logs kept
        soak.replicated.problems.append(f"the phase stopped: {exc!r} (logs under {scratch})")
    return publish(soak.replicated, summary(soak.replicated), results_dir, "soak-replicated", scratch)
