"""Workers that run the runtime's own partition opening and hand-over against an in-memory Kafka.

Each worker is the real `runtime.sessions.LedgerSessions` (assign, handing, revoke, reopen after a fence), the real
`runtime.kafka_session.open_session` (wait for the changelog to be stable, restore, catch up) and the real
`runtime.commit.Pipeline`, with fakes only at the edge: `SimReader` for the log reader, `SimWriter` for the
transactional writer (fenced by the group's generation, as the coordinator fences offsets, and by the transactional
id's epoch, as a restarted worker fences its previous incarnation), and dict stores.

Each worker process is its own event loop: a paused worker's loop simply does not run, a crashed worker's tasks are
cancelled and its store stays for its next incarnation. The group rebalances eagerly, as Faust's does: every member
has all its partitions revoked, then gets its new assignment under the new generation; a paused member misses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiokafka import TopicPartition

from payments_app.domain.checks import InvariantViolation
from payments_app.domain.commands import ClientTransaction
from payments_app.domain.routing import CONCURRENT, decided_in
from payments_app.runtime.commit import GroupResult, PartitionCommit, Pipeline
from payments_app.runtime.kafka_session import LedgerTopics
from payments_app.runtime.ledger_writer import ProducerReplaced, StaleAssignment
from payments_app.runtime.sessions import LedgerSessions
from payments_app.runtime.txn_offsets import GroupMember
from tables.codec import encode_batch, store_entries
from tests.unit.simulation import ChangelogReadout, SimStore

TOPICS = LedgerTopics("sim", "sim:9092", "sim-transactions", "sim-ledger-changelog")


class Dead(Exception):
    """The worker's process is gone: nothing it runs reaches the broker."""


class Record(NamedTuple):
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class Broker:
    """The app's topics and consumer group: transactions partitions, changelog partitions, committed offsets."""

    partitions: int
    logs: list[list[bytes]] = field(init=False)
    changelogs: list[list[tuple[bytes, bytes]]] = field(init=False)
    committed: list[int] = field(init=False)
    generation: int = 0
    epochs: dict[str, int] = field(default_factory=dict)  # per transactional id
    #: turns of the event loop a commit takes before the coordinator checks it, and again after it is in the log:
    #: past a worker's turns per operation (`SimWorker.run`), a commit is still in flight when the next one begins
    latency: int = 0

    def __post_init__(self) -> None:
        self.logs = [[] for _ in range(self.partitions)]
        self.changelogs = [[] for _ in range(self.partitions)]
        self.committed = [0] * self.partitions


class SimReader:
    """`kafka_session.LogReader` over the broker's lists (a sim commit is atomic: the changelog is always stable)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def stable_end(self, tp: TopicPartition, within_s: float) -> int:
        return len(self.broker.changelogs[tp.partition])

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.broker.committed[tp.partition] or None

    async def read(self, tp: TopicPartition, start: int, end: int, take: Callable[[list], None]) -> None:
        if tp.topic == TOPICS.changelog:
            log = [Record(o, key, value) for o, (key, value) in enumerate(self.broker.changelogs[tp.partition])]
        else:
            log = [Record(o, None, value) for o, value in enumerate(self.broker.logs[tp.partition])]
        if end > len(log):
            raise InvariantViolation(f"{tp}: asked for offsets up to {end - 1}, the log ends at {len(log) - 1}")
        if start < end:
            take(log[start:end])

    async def stop(self) -> None:
        pass


class SimWriter:
    """`ledger_writer.LedgerWriter` over the broker: one transaction per commit, all or nothing."""

    transaction_timeout_s = 10.0

    def __init__(self, broker: Broker, transactional_id: str) -> None:
        self.broker = broker
        self.transactional_id = transactional_id
        self.epoch: int | None = None
        self.dead = False

    async def ready(self) -> None:
        """InitProducerId: hold the id, fencing any earlier holder."""
        if self.dead:
            raise Dead(self.transactional_id)
        if self.epoch is None:
            self.epoch = self.broker.epochs[self.transactional_id] = (
                self.broker.epochs.get(self.transactional_id, 0) + 1
            )

    async def commit(self, parts: Sequence[PartitionCommit], member: GroupMember) -> list[int]:
        await self.ready()
        await self.travel()
        if self.dead:
            raise Dead(self.transactional_id)
        if self.epoch != self.broker.epochs[self.transactional_id]:
            self.epoch = None  # the next commit starts a new producer
            raise ProducerReplaced(f"{self.transactional_id}: epoch over")
        if member.generation != self.broker.generation:
            raise StaleAssignment(f"generation {member.generation} < {self.broker.generation}")
        offsets = []
        for part in parts:
            changelog = self.broker.changelogs[part.partition]
            changelog.extend(part.entries)
            offsets.append(len(changelog) - 1)
            for destination, records in part.relays.items():
                self.broker.logs[destination].extend(records)
            self.broker.committed[part.partition] = part.consumed
        await self.travel()  # committed: the answer is on its way back
        return offsets

    async def travel(self) -> None:
        for _ in range(self.broker.latency):
            await asyncio.sleep(0)

    async def stop(self) -> None:
        pass


class SimStores(dict[int, SimStore]):
    def __missing__(self, partition: int) -> SimStore:
        store = self[partition] = SimStore()
        return store

    def close(self) -> None:
        pass


class NoStandby:
    def release(self, partition: int) -> None:
        pass


class SimWorker:
    """One worker process: its sessions, its pipeline, its consumer's positions, its own event loop."""

    def __init__(self, broker: Broker, name: str, model: str, stores: SimStores | None = None) -> None:
        self.broker = broker
        self.name = name
        self.stores = stores if stores is not None else SimStores()
        self.writer = SimWriter(broker, f"sim-ledger-{name}")
        self.failures: list[BaseException] = []
        self.fenced: list[int] = []  # partitions whose groups were fenced
        self.sessions = LedgerSessions(
            TOPICS, self.stores, NoStandby(), lambda: SimReader(broker), broker.partitions, model,  # type: ignore[arg-type]
            self.writer, self._committed, self.failures.append,  # type: ignore[arg-type]
        )  # fmt: skip
        self.pipeline = Pipeline(broker.partitions, model, self._committed, self.failures.append)
        self.positions: dict[int, int] = {}
        self.generation = 0  # of the assignment it last heard of
        self.paused = False
        self.loop = asyncio.new_event_loop()

    def _committed(self, result: GroupResult) -> None:
        self.fenced += result.fenced
        if result.fenced:  # as the composition root does
            self.sessions.reopen_replaced()

    def run(self, work: Coroutine[Any, Any, Any]) -> Any:
        """Run `work` in this worker's loop, then let its background tasks (openings, commits) go on a while."""
        try:
            return self.loop.run_until_complete(work)
        finally:
            for _ in range(8):
                self.loop.run_until_complete(asyncio.sleep(0))

    async def rebalanced(self, partitions: set[int], member: GroupMember) -> None:
        """Faust's eager rebalance: every partition revoked, then the new assignment announced."""
        self.sessions.revoke(self.sessions.assigned())
        self.sessions.assign(partitions, member)
        self.positions = {p: self.broker.committed[p] for p in partitions}
        self.generation = member.generation

    def commit_consumed(self) -> None:
        """Faust's own offset commit (every `broker_commit_interval`): the records its agent moved past, applied and
        committed by the ledger or not; refused once the group has moved on."""
        if self.generation == self.broker.generation:
            for partition, position in self.positions.items():
                self.broker.committed[partition] = max(self.broker.committed[partition], position)

    def rewind(self, partition: int, records: int) -> None:
        """The consumer goes back (it re-seeked): it hands the agent records it handed before."""
        if partition in self.positions:
            self.positions[partition] = max(0, self.positions[partition] - records)

    async def consume(self, partition: int, records: int) -> None:
        """The consumer hands the agent up to `records` of the partition, from its position (as the agent does)."""
        log = self.broker.logs[partition]
        for _ in range(records):
            offset = self.positions.get(partition)
            if offset is None or offset >= len(log):
                return
            self.sessions.handing(partition, offset)
            session = await self.sessions.session(partition)
            if session is None:
                return
            await self.pipeline.add(session, offset, log[offset], 0.0)
            self.positions[partition] = offset + 1

    async def submit(self, tx: ClientTransaction) -> bool:
        """A client's transaction at this worker, as `service.intake` stages it; whether it committed here."""
        partition = decided_in(tx, self.broker.partitions, self.pipeline.model)
        session = self.sessions.opened(partition)
        if session is None:
            return False
        return partition in (await self.pipeline.add_submitted(session, [tx])).committed

    async def drain(self) -> None:
        await self.pipeline.drain()

    def crash(self) -> None:
        """The process dies: its tasks end, nothing more of it reaches the broker; its store stays on disk."""
        self.writer.dead = True
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()

        async def ended() -> None:
            await asyncio.gather(*tasks, return_exceptions=True)

        self.loop.run_until_complete(ended())
        self.loop.close()


class HandoverSim(ChangelogReadout):
    """Workers sharing one broker; a test drives them with the operations below, then `settle`s and checks."""

    def __init__(self, partitions: int, workers: int, model: str = CONCURRENT) -> None:
        self.partitions = partitions
        self.model = model
        self.broker = Broker(partitions)
        self.workers = [SimWorker(self.broker, f"w{n}", model) for n in range(workers)]
        self.accepted: dict[str, ClientTransaction] = {}  # by id: in the log, or committed at an owner

    def changelog(self, p: int) -> list[tuple[bytes, bytes]]:
        return self.broker.changelogs[p]

    def live(self) -> list[SimWorker]:
        return [w for w in self.workers if not w.paused]

    def rebalance(self, owners: Sequence[int] | None = None) -> None:
        """A new generation: partition p goes to live worker `owners[p]` (round robin when None); paused workers
        miss it (they keep their old sessions, now stale)."""
        live = self.live()
        self.broker.generation += 1
        for n, worker in enumerate(live):
            chosen = {p for p in range(self.partitions) if (owners[p] if owners else p) % len(live) == n}
            member = GroupMember("sim", self.broker.generation, f"{worker.name}-g{self.broker.generation}", worker.name)
            worker.run(worker.rebalanced(chosen, member))

    def log_submit(self, tx: ClientTransaction) -> None:
        self.broker.logs[decided_in(tx, self.partitions, self.model)].append(encode_batch([tx]))
        self.accepted[tx.id] = tx

    def direct_submit(self, worker: int, tx: ClientTransaction) -> None:
        target = self.workers[worker]
        if not target.paused and target.run(target.submit(tx)):
            self.accepted[tx.id] = tx

    def consume(self, worker: int, partition: int, records: int) -> None:
        target = self.workers[worker]
        if not target.paused:
            target.run(target.consume(partition, records))

    def rewind(self, worker: int, partition: int, records: int) -> None:
        self.workers[worker].rewind(partition, records)

    def commit_consumed(self, worker: int) -> None:
        if not self.workers[worker].paused:
            self.workers[worker].commit_consumed()

    def time_out(self, worker: int) -> None:
        """The broker aborts the worker's transaction at its timeout and bumps its producer's epoch: the worker,
        still a member with the same assignment, is fenced on its next commit and reopens its partitions."""
        transactional_id = self.workers[worker].writer.transactional_id
        if transactional_id in self.broker.epochs:
            self.broker.epochs[transactional_id] += 1

    def crash(self, worker: int) -> None:
        """The worker dies and its supervisor starts it again, on the same store; it rejoins the group."""
        old = self.workers[worker]
        old.crash()
        self.workers[worker] = SimWorker(self.broker, old.name, self.model, old.stores)
        self.rebalance()

    def pause(self, worker: int) -> None:
        """Stopped past its session timeout: the group moves its partitions to the others (if any)."""
        if len(self.live()) > 1:
            self.workers[worker].paused = True
            self.rebalance()

    def resume(self, worker: int) -> None:
        """It runs again, on its stale sessions, until the rebalance its return causes."""
        target = self.workers[worker]
        if target.paused:
            target.paused = False
            for partition in list(target.positions):
                target.run(target.consume(partition, 2))
            self.rebalance()

    def settle(self, rounds: int = 200) -> None:
        """Everyone back (a rebalance if anyone was paused), then every partition open, every record applied, every
        pipeline drained."""
        if any(worker.paused for worker in self.workers):
            for worker in self.workers:
                worker.paused = False
            self.rebalance()  # (without a pause, none: a partition stuck on a fenced session must show as stuck)
        for _ in range(rounds):
            for worker in self.workers:
                for partition in list(worker.positions):
                    worker.run(worker.consume(partition, 1_000))
                worker.run(worker.drain())
            opened = all(w.sessions.open_partitions() == w.sessions.assigned() for w in self.workers)
            if opened and all(self.applied_offset(p) + 1 >= len(self.broker.logs[p]) for p in range(self.partitions)):
                return
        raise AssertionError("the workers did not apply every record")

    def close(self) -> None:
        """Every worker's process ends (its pending tasks cancelled)."""
        for worker in self.workers:
            if not worker.loop.is_closed():
                worker.crash()

    def applied_offset(self, p: int) -> int:
        return self.meta(p).offset

    def failures(self) -> list[BaseException]:
        return [exc for worker in self.workers for exc in worker.failures]

    def stores_match_changelogs(self) -> bool:
        """Each partition's owner's store holds exactly its whole changelog."""
        for worker in self.workers:
            for partition in worker.positions:
                store, changelog = worker.stores[partition], self.broker.changelogs[partition]
                expected = dict(e for entry in changelog for e in store_entries(*entry))
                if store.checkpoint != len(changelog) - 1 or store.entries != expected:
                    return False
        return True
