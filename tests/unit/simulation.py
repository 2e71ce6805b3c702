"""An in-memory cluster that runs the runtime's own commit protocol (`runtime.commit.Group`) against lists.

Partitions are logs of records, changelogs are lists, stores are dicts with a checkpoint. A test chooses the
order in which partitions make progress and what goes wrong: a worker dies before its commit, or after its
commit and before its checkpoint; another worker takes over with an empty store; the consumer's committed offset
lags (records replayed) or runs ahead of what was applied (records skipped); a zombie commits after being fenced.
Client transactions reach a partition through its log, or straight from a client at its owner (`submit_direct`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from payments_app.domain.checks import InvariantViolation
from payments_app.domain.commands import ClientTransaction, ExpireReserved, MoveRequest, OpenAccount, Resolution
from payments_app.domain.invariants import AuditReport, audit_ledger, audit_partition
from payments_app.domain.ledger import (
    META_KEY,
    PartitionMeta,
    PartitionState,
    TxRecord,
    segment_key,
    transaction_key,
)
from payments_app.domain.routing import CONCURRENT, decided_in
from payments_app.domain.segments import Segment, plan_equalization
from payments_app.runtime.commit import Fenced, Group, PartitionCommit, Pipeline
from tables.codec import decode_entry, encode_batch, store_entries
from tables.ledger import NOTHING_APPLIED, storage_key


class Crash(Exception):
    pass


def restored(entries: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """What a store holds after writing `entries` in order: the last value of each key, an empty one removing it."""
    latest = dict(entries)
    return {key: value for key, value in latest.items() if value}


@dataclass
class SimStore:
    """`tables.ledger.PartitionStore` as a dict with a checkpoint."""

    entries: dict[bytes, bytes] = field(default_factory=dict)
    checkpoint: int = NOTHING_APPLIED

    def get(self, key: bytes) -> bytes | None:
        return self.entries.get(key)

    def apply(self, entries: Sequence[tuple[bytes, bytes]], changelog_offset: int) -> None:
        if changelog_offset <= self.checkpoint:
            raise InvariantViolation(f"checkpoint {changelog_offset} is not past {self.checkpoint}")
        for key, value in entries:
            if value:
                self.entries[key] = value
            else:
                self.entries.pop(key, None)
        self.checkpoint = changelog_offset

    def apply_log(self, records: Sequence[tuple[int, bytes, bytes]]) -> int:
        fresh = [(offset, key, value) for offset, key, value in records if offset > self.checkpoint]
        for offset, key, value in fresh:
            self.apply(store_entries(key, value), offset)
        return len(fresh)

    def discard_if_ahead(self, log_end: int) -> None:
        if self.checkpoint >= log_end:
            self.entries.clear()
            self.checkpoint = NOTHING_APPLIED


@dataclass
class SimPartition:
    log: list[bytes] = field(default_factory=list)  # the transactions partition
    changelog: list[tuple[bytes, bytes]] = field(default_factory=list)
    store: SimStore = field(default_factory=SimStore)
    committed: int = 0  # the consumer group's committed offset: where a new session's consumer starts
    epoch: int = 0  # the transactional id's epoch: a session with an older one is fenced
    session: SimSession | None = None


@dataclass(eq=False)
class SimSession:
    cluster: SimCluster
    partition: int
    store: SimStore
    epoch: int
    delivered: int | None = None
    state: PartitionState | None = None
    crash_before_commit: bool = False
    crash_before_checkpoint: bool = False

    async def read_range(self, start: int, end: int) -> list[tuple[int, bytes]]:
        log = self.cluster.parts[self.partition].log
        return [(offset, log[offset]) for offset in range(start, end)]

    @property
    def writer(self) -> SimSession:
        """Each session writes alone, fenced by its partition's epoch (the runtime fences by the group)."""
        return self

    async def commit(self, parts: Sequence[PartitionCommit]) -> list[int]:
        (commit,) = parts
        assert commit.partition == self.partition
        part = self.cluster.parts[self.partition]
        if self.epoch != part.epoch:
            raise Fenced(f"epoch {self.epoch} < {part.epoch}")
        if self.crash_before_commit:
            raise Crash("before commit")
        part.changelog.extend(commit.entries)
        for destination, records in commit.relays.items():
            self.cluster.parts[destination].log.extend(records)
        if self.crash_before_checkpoint:
            raise Crash("after commit, before checkpoint")
        return [len(part.changelog) - 1]

    def checkpoint(self, entries: Sequence[tuple[bytes, bytes]], changelog_offset: int) -> None:
        self.store.apply(entries, changelog_offset)


class ChangelogReadout:
    """The outcome read from the changelogs (what every future owner restores), for any simulated cluster."""

    partitions: int

    def changelog(self, p: int) -> list[tuple[bytes, bytes]]:
        raise NotImplementedError

    def stored(self, p: int) -> dict[bytes, bytes]:
        """The entries a store restored from partition `p`'s whole changelog holds."""
        return restored(entry for record in self.changelog(p) for entry in store_entries(*record))

    def value(self, p: int, key: str) -> Any:
        return decode_entry(self.stored(p).get(storage_key(p, key)))

    def meta(self, p: int) -> PartitionMeta:
        return PartitionMeta.from_dict(self.value(p, META_KEY) or PartitionMeta().to_dict())

    def segments(self, account: str) -> list[Segment]:
        return [Segment.from_stored(v) for p in range(self.partitions) if (v := self.value(p, segment_key(account)))]

    def balance(self, account: str) -> int:
        return sum(s.balance for s in self.segments(account))

    def status(self, tx_id: str) -> TxRecord | None:
        """The transaction's record, wherever it was decided."""
        for p in range(self.partitions):
            row = self.value(p, transaction_key(tx_id))
            if row is not None:
                return TxRecord.from_row(row)
        return None

    def audit(self) -> AuditReport:
        per_partition = {}
        for p in range(self.partitions):
            meta = self.meta(p)
            prefix = storage_key(p, "s/")
            latest = {key: raw for key, raw in self.stored(p).items() if key.startswith(prefix)}
            segs = [
                (key[len(prefix) :].decode(), Segment.from_stored(decode_entry(raw))) for key, raw in latest.items()
            ]
            per_partition[p] = (meta, audit_partition(p, meta, segs))
        return audit_ledger(per_partition)


class SimCluster(ChangelogReadout):
    def __init__(self, partitions: int, model: str = CONCURRENT) -> None:
        self.partitions = partitions
        self.model = model
        self.parts = [SimPartition() for _ in range(partitions)]

    def changelog(self, p: int) -> list[tuple[bytes, bytes]]:
        return self.parts[p].changelog

    def open(self, account: str) -> None:
        for part in self.parts:
            part.log.append(encode_batch([OpenAccount(account, "test")]))

    def submit(self, command: ClientTransaction, partition: int | None = None) -> None:
        """Append a client transaction to the partition the model routes it to (or to `partition`)."""
        p = decided_in(command, self.partitions, self.model) if partition is None else partition
        self.parts[p].log.append(encode_batch([command]))

    def submit_as_a_client(self, tx: ClientTransaction, rng: random.Random, fault_rate: float) -> None:
        """Half the time through the log; else at the owner, where a client retries until an answer says committed
        (each attempt may meet a fault) and may send it again afterwards."""
        if rng.random() < 0.5:
            self.submit(tx)
            return
        faults = [None, "before_commit", "before_checkpoint", "zombie"]
        while not self.submit_direct(tx, rng.choice(faults) if rng.random() < fault_rate else None):
            pass
        if rng.random() < 0.2:
            assert self.submit_direct(tx)

    def resolve(self, command: Resolution | ExpireReserved, tx_id: str) -> None:
        """Append a reservation's post, void or expiry to the partition that decided `tx_id`."""
        self.parts[self.where(tx_id)].log.append(encode_batch([command]))

    def where(self, tx_id: str) -> int:
        """The partition holding the transaction's record (the API looks it up the same way)."""
        return next(p for p in range(self.partitions) if self.value(p, transaction_key(tx_id)) is not None)

    def submit_direct(self, command: ClientTransaction, fault: str | None = None) -> bool:
        """A client's transaction applied at its partition's owner as `service.intake` does it: staged in the
        owner's open group and committed, never in the log. `fault`: "before_commit" or "before_checkpoint" kills
        the owner; "zombie" submits to an owner another has fenced. Returns whether the owner said committed (the
        client retries, with the same id, until it does)."""
        p = decided_in(command, self.partitions, self.model)
        session = self.session(p)
        if fault == "zombie":
            self.parts[p].session = None
            self.session(p)  # the new owner opens, which fences this one
        session.crash_before_commit = fault == "before_commit"
        session.crash_before_checkpoint = fault == "before_checkpoint"

        async def attempt() -> bool:
            pipeline = Pipeline(self.partitions, self.model, lambda result: None, lambda exc: None)
            return p in (await pipeline.add_submitted(session, [command])).committed

        try:
            return asyncio.run(attempt())
        except Crash:
            self.crash(p)
            return False

    def pending(self) -> list[int]:
        return [p for p, part in enumerate(self.parts) if self.applied(p) + 1 < len(part.log)]

    def applied(self, p: int) -> int:
        return self.meta(p).offset

    # sessions: open = fence + restore from the changelog + catch up to the committed offset

    def session(self, p: int) -> SimSession:
        part = self.parts[p]
        if part.session is None:
            part.epoch += 1
            store = part.store
            for offset in range(store.checkpoint + 1, len(part.changelog)):
                store.apply(store_entries(*part.changelog[offset]), offset)
            session = SimSession(self, p, store, part.epoch)
            group = Group(self.partitions, self.model)
            asyncio.run(self._commit_catch_up(group, session, part.committed))
            part.session = session
        return part.session

    @staticmethod
    async def _commit_catch_up(group: Group, session: SimSession, committed: int) -> None:
        await group.catch_up(session, committed)
        await group.commit()

    def crash(self, p: int) -> None:
        """The owner dies: its session goes; its store stays on disk for the next session on this worker."""
        self.parts[p].session = None

    def take_over(self, p: int) -> None:
        """Another worker, with an empty store, takes the partition over."""
        self.parts[p].session = None
        self.parts[p].store = SimStore()

    # the group loop, as the agent runs it

    def step(self, p: int) -> int:
        return self.step_group(p, 1)

    def step_group(self, p: int, records: int, crash: str | None = None, lost: int = 0, back: int = 0) -> int:
        """Deliver up to `records` records of p from its session's position, as one group; `crash` is
        "before_commit" or "before_checkpoint"; a new session's consumer may lose its first `lost` records; a
        running one may go `back` (re-seek). Returns the records delivered."""
        session = self.session(p)
        part = self.parts[p]
        start = part.committed if session.delivered is None else max(0, session.delivered + 1 - back)
        if session.delivered is None:
            start = min(start + lost, len(part.log) - 1)
        count = min(records, len(part.log) - start)
        session.crash_before_commit = crash == "before_commit"
        session.crash_before_checkpoint = crash == "before_checkpoint"
        try:
            asyncio.run(self._run_group(session, [(o, part.log[o]) for o in range(start, start + count)]))
        except Crash:
            self.crash(p)
            return count
        part.committed = max(part.committed, start + count)  # Faust acks the group, and commits later
        return count

    async def _run_group(self, session: SimSession, records: list[tuple[int, bytes]]) -> None:
        """The agent's loop: the first record commits alone, the rest are staged while it commits, in groups of
        up to half the records, each commit starting a millisecond after the one before at the earliest."""
        pipeline = Pipeline(self.partitions, self.model, lambda result: None, lambda exc: None, (len(records) + 1) // 2,
                            spacing_s=0.001)  # fmt: skip
        for offset, value in records:
            await pipeline.add(session, offset, value, time.time())
        await pipeline.drain()

    def zombie_commit(self, p: int, records: int) -> bool:
        """A session that lost the partition (paused past its session timeout) tries to commit a group: the new
        owner fenced it, so nothing it staged may become visible. Returns whether it was fenced."""
        zombie = self.session(p)
        self.parts[p].session = None
        self.session(p)  # the new owner opens, which fences the zombie
        part = self.parts[p]
        start = part.committed if zombie.delivered is None else zombie.delivered + 1
        count = min(records, len(part.log) - start)
        before = list(part.changelog)

        async def attempt() -> bool:
            group = Group(self.partitions, self.model)
            for offset in range(start, start + count):
                await group.add(zombie, offset, part.log[offset], time.time())
            return bool((await group.commit()).fenced) or count == 0

        fenced = asyncio.run(attempt())
        assert part.changelog == before
        return fenced

    def rewind(self, p: int, records: int) -> None:
        """The committed offset lagged the changelog when the worker died: records are delivered again."""
        self.crash(p)
        self.parts[p].committed = max(0, self.parts[p].committed - records)

    def lose_first(self, p: int, records: int) -> None:
        """A new owner's consumer drops its first records (prefetched, then thrown away in a rebalance)."""
        self.crash(p)
        self.step_group(p, 1, lost=records)

    def skip(self, p: int, records: int) -> None:
        """The consumer's committed offset ran past records that were never applied (Faust issues 216, 221)."""
        self.crash(p)
        self.parts[p].committed = min(len(self.parts[p].log), self.parts[p].committed + records)

    def rebalance(self, account: str) -> None:
        """What the reconciler does for a short account: move requests that even out its segments."""
        balances = [s.balance for s in self.segments(account)]
        for source, destination, amount in plan_equalization(balances):
            self.parts[source].log.append(encode_batch([MoveRequest(account, amount, destination, None, None)]))

    def run(self, rng: random.Random | None = None, fault_rate: float = 0.0, max_steps: int = 100_000) -> None:
        rng = rng or random.Random(0)
        faults = [
            lambda p: self.step_group(p, rng.randint(1, 3), "before_commit"),
            lambda p: self.step_group(p, rng.randint(1, 3), "before_checkpoint"),
            self.take_over,
            lambda p: self.rewind(p, rng.randint(1, 3)),
            lambda p: self.skip(p, rng.randint(1, 3)),
            lambda p: self.lose_first(p, rng.randint(1, 3)),
            lambda p: self.step_group(p, rng.randint(1, 3), back=rng.randint(1, 3)),
            lambda p: self.zombie_commit(p, rng.randint(1, 3)),
        ]
        for _ in range(max_steps):
            ready = self.pending()
            if not ready:
                return
            p = rng.choice(ready)
            if rng.random() < fault_rate:
                rng.choice(faults)(p)
            else:
                self.step_group(p, rng.randint(1, 3))
        raise AssertionError("the cluster did not become quiescent")

    def stores_match_changelogs(self) -> bool:
        """Every store holds exactly the changelog prefix its checkpoint names."""
        for part in self.parts:
            committed = part.changelog[: part.store.checkpoint + 1]
            expected = restored(e for entry in committed for e in store_entries(*entry))
            if part.store.entries != expected:
                return False
        return True
