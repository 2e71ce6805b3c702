"""A ledger partition's session on Kafka: wait out the previous owner, restore the store's tail, catch up.

A session opens under its assignment's `Tenure` (the worker's one transactional writer, and the group member the
partition was assigned to). The previous owner cannot commit under an assignment that is over; what it may still
commit is a transaction whose offsets the group accepted before the rebalance, and whose records are therefore
already in the changelog. So the changelog is read (read_committed) only once no transaction is open on it
(`LogReader.stable_end`), from the store's checkpoint to its end: no one else can add to it afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from payments_app.domain.checks import InvariantViolation
from payments_app.domain.ledger import PartitionState
from payments_app.runtime.broker_waits import REQUEST_TIMEOUT_MS, end_offsets, until_answered
from payments_app.runtime.ledger_writer import Tenure
from payments_app.runtime.metrics import METRICS
from tables.ledger import PartitionStore

log = logging.getLogger(__name__)

#: a log read that makes no progress for this long stops the worker instead of applying past the range
READ_STALL_S = 30.0
READ_POLL_MS = 50  # a range holding only transaction markers returns no records: each poll waits this long
READ_MAX_RECORDS = 5_000
STABLE_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class LedgerTopics:
    app_id: str
    bootstrap: str
    transactions: str
    changelog: str


class LogReader:
    """Reads ranges of a topic partition in full, committed records only; one consumer, one range at a time.

    The group's committed offsets come from an admin client: a consumer naming the group would take part in it.
    A second consumer, reading uncommitted records, knows the partitions' high watermarks. A node that does not
    answer (down, paused) is waited out (`broker_waits`).
    """

    def __init__(self, bootstrap: str, group_id: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=READ_POLL_MS,  # a range ending in transaction markers is read in one short poll
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
        self._uncommitted = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, isolation_level="read_uncommitted",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )  # fmt: skip
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS)
        self._group_id = group_id
        self._lock = asyncio.Lock()
        self._started = False

    async def stable_end(self, tp: TopicPartition, within_s: float) -> int:
        """The end of `tp` once no transaction is open on it: every record written to it before this call is
        committed or aborted, and below the offset returned. Raises if that takes longer than `within_s`.

        The high watermark is read first, the last stable offset (below the first open transaction's first record)
        after it: a transaction open when the first was read and still open at the second holds the second below
        the first.
        """
        deadline = time.monotonic() + within_s
        while True:
            async with self._lock:  # not held while waiting: other partitions' reads go on meanwhile
                await self._start()
                high = (await end_offsets(self._uncommitted, [tp], f"{tp} high watermark"))[tp]
                stable = (await end_offsets(self._consumer, [tp], f"{tp} stable offset"))[tp]
            if stable >= high:
                return stable
            if time.monotonic() > deadline:
                raise InvariantViolation(f"{tp}: a transaction stayed open past {within_s:.0f} s "
                                         f"(stable offset {stable}, high watermark {high})")  # fmt: skip
            await asyncio.sleep(STABLE_POLL_S)

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for `tp`: where a new owner's consumer starts."""
        async with self._lock:
            await self._start()
            offsets = await until_answered(
                lambda: self._admin.list_consumer_group_offsets(self._group_id, partitions=[tp]),
                f"{tp} committed",
                self._admin._client,
            )
        committed = offsets.get(tp)
        return None if committed is None or committed.offset < 0 else committed.offset

    async def read(self, tp: TopicPartition, start: int, end: int, take: Callable[[list], None]) -> None:
        """Hand every committed record at offsets start..end-1 to `take`, in order, in chunks.

        Completeness is judged by the consumer's position, not by counting records: aborted records and
        transaction markers take offsets too, and are skipped.
        """
        async with self._lock:
            await self._start()
            self._consumer.assign([tp])
            self._consumer.seek(tp, start)
            last_progress = time.monotonic()
            while (position := await self._consumer.position(tp)) < end:
                fetched = await self._consumer.getmany(tp, timeout_ms=READ_POLL_MS, max_records=READ_MAX_RECORDS)
                records = [r for r in fetched.get(tp, []) if r.offset < end]
                if records:
                    take(records)
                if await self._consumer.position(tp) > position:
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > READ_STALL_S:
                    raise InvariantViolation(f"{tp}: could not read offsets {position}..{end - 1} within "
                                             f"{READ_STALL_S:.0f} s")  # fmt: skip
            self._consumer.unsubscribe()

    async def _start(self) -> None:
        if not self._started:
            await self._consumer.start()
            await self._uncommitted.start()
            await self._admin.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            await self._consumer.stop()
            await self._uncommitted.stop()
            await self._admin.close()


@dataclass(eq=False)
class KafkaSession:
    """One owner's tenure of a ledger partition (see `runtime.commit.Session`)."""

    partition: int
    store: PartitionStore
    topics: LedgerTopics
    reader: LogReader
    writer: Tenure
    #: whether this session is still its partition's on this worker: once revoked (retired), it never writes the
    #: store again, even for a commit already on its way back (a successor restores that from the changelog)
    current: Callable[[], bool]
    delivered: int | None = None
    state: PartitionState | None = None

    async def read_range(self, start: int, end: int) -> list[tuple[int, bytes]]:
        records: list[tuple[int, bytes]] = []
        tp = TopicPartition(self.topics.transactions, self.partition)
        await self.reader.read(tp, start, end, lambda chunk: records.extend((r.offset, r.value) for r in chunk))
        log.warning("partition %d: read offsets %d..%d the consumer skipped (%d records)", self.partition, start,
                    end - 1, len(records))  # fmt: skip
        return records

    def checkpoint(self, entries: Sequence[tuple[bytes, bytes]], changelog_offset: int) -> None:
        if self.current():
            self.store.apply(entries, changelog_offset)


async def open_session(
    partition: int,
    store: PartitionStore,
    topics: LedgerTopics,
    reader: LogReader,
    tenure: Tenure,
    current: Callable[[], bool],
    catch_up: Callable[[KafkaSession], Awaitable[None]],
) -> KafkaSession:
    """Wait until no earlier writer's transaction is open on the partition's changelog, bring the store up to its
    end, then apply what the group's committed offset says was consumed but the store does not have (`catch_up`)."""
    started = time.monotonic()
    await tenure.writer.ready()  # an earlier incarnation of this worker can commit nothing more
    tp = TopicPartition(topics.changelog, partition)
    end = await reader.stable_end(tp, 2 * tenure.writer.transaction_timeout_s)
    waited_s = time.monotonic() - started
    restored = await restore(store, tp, reader, end)
    METRICS.changelog_records_restored_total += restored
    log.info("partition %d: no earlier transaction open after %.2f s; restored %d changelog records in %.2f s",
             partition, waited_s, restored, time.monotonic() - started - waited_s)  # fmt: skip
    session = KafkaSession(partition, store, topics, reader, tenure, current)
    await catch_up(session)
    return session


async def restore(store: PartitionStore, tp: TopicPartition, reader: LogReader, end: int) -> int:
    """Apply the changelog past the store's checkpoint up to `end`; a store ahead of the changelog is from another
    history."""
    store.discard_if_ahead(end)
    start = store.checkpoint + 1
    restored = 0

    def take(records: list) -> None:
        nonlocal restored
        restored += store.apply_log([(r.offset, r.key, r.value) for r in records])

    if start < end:
        await reader.read(tp, start, end, take)
    return restored
