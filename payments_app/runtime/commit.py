"""The commit protocol between the domain and Kafka: stage a group of records, commit it, then checkpoint.

1. **Stage.** Each record of a group is decoded and applied by the domain to its partition's state (the
   session's `PartitionState`: the entries as objects, kept across groups). When the group closes, the entries
   it changed are encoded once, whatever number of its records changed them, and packed into one changelog
   record per partition (more only past `codec.MAX_PACK_BYTES`). Nothing leaves the process.
2. **Commit.** One Kafka transaction holds the whole group: every partition's entries (to its changelog
   partition), the relays its records made (to the transactions topic), and the offsets consumed. The worker's
   one transactional producer writes it (`runtime.ledger_writer`), under the consumer group's assignment: the
   group coordinator refuses the offsets of an assignment that is over, so a worker that lost its partitions
   commits nothing more (KIP-447).
3. **Checkpoint.** Only then are the entries written to the local store, in one atomic write together with the
   changelog offset they reflect. The store is therefore always a committed prefix of the changelog (in
   store form: `codec.store_entries`), and a restore resumes from its checkpoint.

Order is checked, not trusted: the first record a session (one owner's tenure of a partition) is handed, and the
first after the consumer went back, must follow the last applied one directly, or the range between is read from
the log in full first (a range that cannot be read in full stops the worker). After that, the consumer's order
within a session is relied on: it hands over every committed record, skipping only transaction markers and
aborted records, which take offsets too.

This module knows neither Faust nor aiokafka: the agent runs it against Kafka, the simulator against lists.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from payments_app.domain.checks import require
from payments_app.domain.commands import Command
from payments_app.domain.ledger import BatchOutcome, PartitionState, TxRecord, Writes, process_batch
from payments_app.runtime.metrics import RECORD_SECONDS
from tables.codec import (
    commit_records,
    decode_batch,
    decode_entry,
    encode_entry,
    encode_records,
    group_by_partition,
    transaction_entries,
)
from tables.ledger import storage_key


class Fenced(Exception):
    """The partition has a newer writer; this session's staged work is dropped, and the session closed."""


class GroupStatus(enum.Enum):
    """A group's life, one way: STAGING -> SEALED -> COMMITTING -> COMMITTED, or FAILED from any of them (the
    worker stops: nothing of a failed group is ever written)."""

    STAGING = "staging"  # records are applied to the partitions' states; nothing has left the process
    SEALED = "sealed"  # closed to records, its entries encoded; the next group may stage on top of it
    COMMITTING = "committing"  # its Kafka transactions are in flight
    COMMITTED = "committed"  # its transactions ended (committed, or fenced and dropped) and the stores checkpointed
    FAILED = "failed"  # staging or committing raised


class Store(Protocol):
    checkpoint: int

    def get(self, key: bytes) -> bytes | None: ...

    def apply(self, entries: Sequence[tuple[bytes, bytes]], changelog_offset: int) -> None: ...


@dataclass(frozen=True, slots=True)
class PartitionCommit:
    """A partition's part of a commit: its changelog entries, its relays by destination partition, and the next
    offset of its transactions partition to consume (every record before it is applied by this commit)."""

    partition: int
    entries: Sequence[tuple[bytes, bytes]]
    relays: dict[int, list[bytes]]
    consumed: int


class Writer(Protocol):
    async def commit(self, parts: Sequence[PartitionCommit]) -> list[int]:
        """Write every part in one transaction; the changelog offset of each part's last entry, in order. May
        raise Fenced: then nothing of it was committed."""
        ...


class Session(Protocol):
    """One owner's tenure of a partition: its committed store, and the writer its commits go through."""

    partition: int
    store: Store
    writer: Writer  # sessions that share a writer commit a group in one transaction
    delivered: int | None  # the last offset this session was handed; None until the first record
    state: PartitionState | None  # the partition's entries as objects (`state_of`); None until first staged

    async def read_range(self, start: int, end: int) -> list[tuple[int, bytes]]:
        """Every committed record of the transactions partition at offsets start..end-1; raises if it cannot."""
        ...

    def checkpoint(self, entries: Sequence[tuple[bytes, bytes]], changelog_offset: int) -> None:
        """Write the committed entries, in their store form (`codec.store_entries`), to the store, unless the
        session was retired (a newer session of this partition restores them from the changelog instead)."""
        ...


def state_of(session: Session) -> PartitionState:
    """The session's state: what its store holds, with every record staged since the session opened applied."""
    if session.state is None:
        store, partition = session.store, session.partition
        session.state = PartitionState(lambda key: decode_entry(store.get(storage_key(partition, key))))
    return session.state


def encode_writes(partition: int, writes: Writes) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """A partition's changes as changelog records, and as store entries: the store's entries (one per transaction
    and per history line, the transactions decided now stamped with this moment) are what the changelog records
    carry, packed (`codec.commit_records`)."""
    prefix = storage_key(partition, "").decode()
    stored = [((prefix + key).encode(), encode_entry(entry)) for key, entry in writes.entries]
    if writes.transactions:
        rows = [record.to_row() for record in writes.transactions]
        stored = [*transaction_entries(prefix, writes.seq, rows, time.time_ns() // 1_000_000), *stored]
    return commit_records(prefix, writes.seq, stored), stored


@dataclass(slots=True)
class StagedPartition:
    """A partition's part of a group: what its records relayed, and, once the group is sealed, the entries they
    changed, encoded for the changelog and for the store."""

    session: Session
    state: PartitionState
    changelog: list[tuple[bytes, bytes]] = field(default_factory=list)
    stored: list[tuple[bytes, bytes]] = field(default_factory=list)
    relays: list[tuple[int, Command]] = field(default_factory=list)
    outcomes: list[BatchOutcome] = field(default_factory=list)
    transactions: list[TxRecord] = field(default_factory=list)  # created or decided by its records
    consumed: int = 0  # once sealed: the next offset of the transactions partition to apply

    def seal(self) -> None:
        writes = self.state.take_writes()
        self.changelog, self.stored = encode_writes(self.session.partition, writes)
        self.transactions = writes.transactions
        self.consumed = self.state.meta().offset + 1

    def to_commit(self) -> PartitionCommit:
        relays = encode_records(group_by_partition(self.relays))
        return PartitionCommit(self.session.partition, self.changelog, relays, self.consumed)


@dataclass(slots=True)
class GroupResult:
    committed: dict[int, list[BatchOutcome]] = field(default_factory=dict)
    fenced: list[int] = field(default_factory=list)
    transactions: dict[int, list[TxRecord]] = field(default_factory=dict)  # of the committed partitions


class Group:
    """Records applied one after another, whose writes and relays then commit in one transaction per writer.

    Waiting for the broker after every record left the agent idle for a round trip per record; a transaction
    costs milliseconds whatever it holds, so a group amortises it over all its records. A group may be
    staged while the `previous` one is still being committed: it reads that group's writes (the sessions' states
    hold them), and commits after it (a partition's transactions go one at a time). If the previous one is
    fenced, so is this one.
    """

    def __init__(self, partitions: int, model: str, previous: Group | None = None) -> None:
        self.partitions = partitions
        self.model = model
        self.previous = previous
        self.staged: dict[int, StagedPartition] = {}
        #: the timestamps (seconds since the epoch) of the records delivered and staged so far; records read to
        #: fill a gap are not among them
        self.created_s: list[float] = []
        self.commands = 0  # staged so far, across partitions
        self.status = GroupStatus.STAGING
        #: the commit's result, for those who staged batches submitted here (created by the first of them)
        self.result: asyncio.Future[GroupResult] | None = None

    @property
    def records(self) -> int:
        """Records delivered and staged so far (the bound `Pipeline.max_records` counts)."""
        return len(self.created_s)

    def _part(self, session: Session) -> StagedPartition:
        require(self.status is GroupStatus.STAGING, f"a record staged into a group that is {self.status.value}")
        staged = self.staged.get(session.partition)
        if staged is None:
            staged = self.staged[session.partition] = StagedPartition(session, state_of(session))
        return staged

    async def add(self, session: Session, offset: int, value: bytes, created_s: float) -> None:
        """Stage one record, created at `created_s`; first the records the session has not seen between its last
        applied one and this."""
        staged = self._part(session)
        require(staged.session is session, f"partition {session.partition}: two sessions in one group")
        if session.delivered is not None and offset <= session.delivered:
            session.delivered = None  # the consumer went back (it re-seeked): check from the applied offset again
        if session.delivered is None:
            applied = staged.state.meta().offset
            if offset > applied + 1:
                for missing_offset, missing in await session.read_range(applied + 1, offset):
                    self._stage(staged, missing_offset, missing)
        session.delivered = offset
        self._stage(staged, offset, value)
        self.created_s.append(created_s)

    async def catch_up(self, session: Session, end: int) -> None:
        """Stage every record the partition committed to before `end` that its store has not applied yet.

        A new owner's consumer starts at the group's committed offset; if a record below it was never applied
        (the consumer skipped it), nothing would ever deliver it again.
        """
        staged = self._part(session)
        applied = staged.state.meta().offset
        if end > applied + 1:
            for offset, value in await session.read_range(applied + 1, end):
                self._stage(staged, offset, value)

    def add_submitted(self, session: Session, commands: Sequence[Command]) -> None:
        """Stage a batch that clients submitted to this owner: it is in no log until this group commits. Not
        counted as a record: a group holds as many as its bound on commands lets it (an array of 50 spread over 8
        partitions is 8 batches)."""
        self._apply(self._part(session), None, commands)

    def _stage(self, staged: StagedPartition, offset: int, value: bytes) -> None:
        self._apply(staged, offset, decode_batch(value))

    def _apply(self, staged: StagedPartition, offset: int | None, commands: Sequence[Command]) -> None:
        self.commands += len(commands)
        outcome = process_batch(staged.state, staged.session.partition, self.partitions, offset, commands, self.model)
        staged.relays.extend(outcome.relays)
        staged.outcomes.append(outcome)

    def seal(self) -> None:
        """Close the group to more records and encode the entries it changed: from here on the next group stages
        into the same states, so this must run before anything else does."""
        if self.status is GroupStatus.STAGING:
            self.status = GroupStatus.SEALED
            for staged in self.staged.values():
                staged.seal()

    async def commit(self) -> GroupResult:
        """Commit every partition's part, one transaction per writer, then checkpoint each committed part."""
        previous = self.previous
        require(
            previous is None or previous.status is GroupStatus.COMMITTED, "a group committed before the one it read"
        )
        self.previous = None  # its writes are in the stores now
        self.seal()
        require(self.status is GroupStatus.SEALED, f"a group committed while {self.status.value}")
        self.status = GroupStatus.COMMITTING
        result = GroupResult()
        by_writer: dict[int, list[StagedPartition]] = {}
        for staged in self.staged.values():
            if staged.changelog or staged.relays:
                by_writer.setdefault(id(staged.session.writer), []).append(staged)
        together = list(by_writer.values())
        outcomes = await asyncio.gather(*(self._commit_together(parts) for parts in together), return_exceptions=True)
        for parts, outcome in zip(together, outcomes, strict=True):
            if isinstance(outcome, Fenced):
                result.fenced.extend(staged.session.partition for staged in parts)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                for staged in parts:
                    result.committed[staged.session.partition] = staged.outcomes
                    result.transactions[staged.session.partition] = staged.transactions
        self.status = GroupStatus.COMMITTED
        return result

    @staticmethod
    async def _commit_together(parts: list[StagedPartition]) -> None:
        offsets = await parts[0].session.writer.commit([staged.to_commit() for staged in parts])
        for staged, changelog_offset in zip(parts, offsets, strict=True):
            staged.session.checkpoint(staged.stored, changelog_offset)


class Pipeline:
    """Group commit: records are staged into the open group while the group before it commits, and the moment
    that commit ends, the open group starts committing, whatever it holds.

    A transaction costs tens of milliseconds whatever it holds, so a lone record commits at once instead of
    waiting for a group to fill, and under load a group holds what arrived during one commit, up to
    `max_commands` transactions or `max_records` records; past either, `add` waits for the commit. The bound
    matters: staging far ahead of a commit slows it (its round trips wait behind the staging on the one event
    loop) and made the pipeline slower, not faster (1 worker: 13,000 TPS with 64 records of 500, 22,800 with 2).

    `on_committed` learns each group's result. Any exception while a group is staged (from the agent's records or
    from a client's submission alike) or committed fails the pipeline: `on_failed` learns of it at once (the worker
    stops there, before anything of the open group is written), the open group is dropped, and the failure raises
    again from every later `add`, `add_submitted` or `drain`. After each commit a partition's state lets go of its
    segments once it holds more than `max_segments` (see `PartitionState.trim`).

    Commits are spaced by what they cost: a commit starts at least `spacing_s` after the one before it started (at
    once if its group is full, or on `drain`). A Kafka transaction costs about 2.2 ms of the broker's CPU and 0.6 ms
    of the worker's whatever it holds (`bench.transaction_cost`); at a few thousand single-transfer requests a
    second, commits back to back held a handful of transfers each and the transactions took most of the CPU.
    """

    def __init__(
        self,
        partitions: int,
        model: str,
        on_committed: Callable[[GroupResult], None],
        on_failed: Callable[[BaseException], None],
        max_records: int = 64,
        max_commands: int = 1_000,
        max_segments: int = 100_000,
        spacing_s: float = 0.0,
    ) -> None:
        self.partitions = partitions
        self.model = model
        self.on_committed = on_committed
        self.on_failed = on_failed
        self.max_records = max_records
        self.max_commands = max_commands
        self.max_segments = max_segments
        self.spacing_s = spacing_s
        self._last_start = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._open: Group | None = None
        self._previous: Group | None = None  # the last group that started committing
        self._committing: asyncio.Task[None] | None = None
        self._adding = False
        self._room = asyncio.Event()
        self._room.set()
        self._failure: BaseException | None = None

    async def add(self, session: Session, offset: int, value: bytes, created_s: float) -> None:
        """Stage one record, created at `created_s` (its timestamp), in the open group (waiting while it is full);
        it commits with that group."""
        group = await self._open_group()
        self._adding = True
        try:
            await group.add(session, offset, value, created_s)
        except Exception as exc:
            self._fail(group, exc)
            raise
        finally:
            self._adding = False
        self._staged(group)

    async def add_submitted(self, session: Session, commands: Sequence[Command]) -> GroupResult:
        """Stage a batch clients submitted to this owner in the open group (waiting while it is full), and wait for
        that group's commit: its result says whether the batch is committed (`GroupResult.committed` holds its
        partition) or was dropped (`fenced`)."""
        group = await self._open_group()
        try:
            group.add_submitted(session, commands)
        except Exception as exc:
            self._fail(group, exc)
            raise
        if group.result is None:
            group.result = asyncio.get_running_loop().create_future()
        result = group.result
        self._staged(group)
        return await asyncio.shield(result)

    def commit_running_s(self) -> float:
        """How long the commit under way has run (0 when none is): seconds the brokers have not finished it in."""
        if self._committing is None:
            return 0.0
        return asyncio.get_running_loop().time() - self._last_start

    async def _open_group(self) -> Group:
        """The group to stage into, once it has room."""
        while not self._room.is_set():
            await self._room.wait()
        self._raise_failure()
        if self._open is None:
            self._open = Group(self.partitions, self.model, self._previous)
        return self._open

    def _staged(self, group: Group) -> None:
        if group.records >= self.max_records or group.commands >= self.max_commands:
            self._room.clear()
        self._start_next()

    async def drain(self) -> None:
        """Wait until every record added so far is committed (or its commit failed, which raises here)."""
        self._start_next(at_once=True)
        while (committing := self._committing) is not None:
            await committing
            self._start_next(at_once=True)
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _start_next(self, at_once: bool = False) -> None:
        if self._committing is not None or self._adding or self._open is None or self._failure is not None:
            return
        loop = asyncio.get_running_loop()
        early_by = self._last_start + self.spacing_s - loop.time()
        if early_by > 0 and not at_once and self._room.is_set():  # not full: it fills a little longer
            if self._timer is None:
                self._timer = loop.call_later(early_by, self._spacing_passed)
            return
        self._last_start = loop.time()
        group, self._open = self._open, None
        group.seal()
        self._previous = group
        self._committing = loop.create_task(self._commit(group), name="commit-group")
        self._room.set()

    def _spacing_passed(self) -> None:
        self._timer = None
        self._start_next()

    async def _commit(self, group: Group) -> None:
        try:
            result = await group.commit()
            for partition in result.committed:  # their entries are in the stores now
                group.staged[partition].state.trim(self.max_segments)
            if not result.fenced:  # one transaction: every record of the group committed
                committed_s = time.time()
                for created_s in group.created_s:
                    RECORD_SECONDS.observe(committed_s - created_s)
            self.on_committed(result)
            if group.result is not None:
                group.result.set_result(result)
        except Exception as exc:  # noqa: BLE001 - the one failure policy: see the class docstring
            self._fail(group, exc)
        finally:
            self._committing = None
        self._start_next()

    def _fail(self, group: Group, exc: BaseException) -> None:
        """Drop `group` and the open one (neither is ever committed), answer whoever waits for them with `exc`, and
        tell `on_failed` (which stops the worker)."""
        self._failure = exc
        for failed in (group, self._open):  # the same group twice when it was the open one: harmless
            if failed is None:
                continue
            failed.status = GroupStatus.FAILED
            if failed.result is not None and not failed.result.done():
                failed.result.set_exception(exc)
                failed.result.exception()  # raised to whoever still waits; not logged as unretrieved
        self._open = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._room.set()
        self.on_failed(exc)
