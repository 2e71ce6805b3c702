"""A ledger partition's session on Kafka: fence the previous writer, restore the store's tail, commit groups.

Opening a session starts a transactional producer whose id is fixed per partition (`{app}-ledger-{p}`, as Kafka
Streams' first exactly-once design did per task). Its `InitProducerId` bumps the id's epoch, which fences every
earlier producer of that partition, on any worker, and resolves a transaction one of them left open. Only then
is the changelog read (read_committed) from the store's checkpoint to its end: no one else can add to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced, TransactionCoordinatorFenced

from payments_app.domain.checks import InvariantViolation
from payments_app.domain.ledger import PartitionState
from payments_app.metrics import METRICS
from payments_app.runtime.commit import Fenced
from payments_app.runtime.faust_fixes import track_topics
from tables.ledger import PartitionStore

log = logging.getLogger(__name__)

#: a commit that has not completed by then is abandoned and the worker stops (a stuck send must not hang forever)
COMMIT_TIMEOUT_S = 30.0
#: a log read that makes no progress for this long stops the worker instead of applying past the range
READ_STALL_S = 30.0
READ_POLL_MS = 50  # a range holding only transaction markers returns no records: each poll waits this long
READ_MAX_RECORDS = 5_000
#: the producer's batches: large, so a group's changelog writes cost few requests (the broker takes up to 1 MiB)
MAX_BATCH_BYTES = 900_000
FENCING_ERRORS = (ProducerFenced, InvalidProducerEpoch, TransactionCoordinatorFenced)


@dataclass(frozen=True, slots=True)
class LedgerTopics:
    app_id: str
    bootstrap: str
    transactions: str
    changelog: str


class LogReader:
    """Reads ranges of a topic partition in full, committed records only; one consumer, one range at a time.

    The group's committed offsets come from an admin client: a consumer naming the group would take part in it.
    """

    def __init__(self, bootstrap: str, group_id: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, isolation_level="read_committed"
        )
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._group_id = group_id
        self._lock = asyncio.Lock()
        self._started = False

    async def end_offset(self, tp: TopicPartition) -> int:
        """The last stable offset: every committed record is below it."""
        async with self._lock:
            await self._start()
            return (await self._consumer.end_offsets([tp]))[tp]

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for `tp`: where a new owner's consumer starts."""
        async with self._lock:
            await self._start()
            offsets = await self._admin.list_consumer_group_offsets(self._group_id, partitions=[tp])
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
            await self._admin.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            await self._consumer.stop()
            await self._admin.close()


@dataclass(eq=False)
class KafkaSession:
    """One owner's tenure of a ledger partition (see `runtime.commit.Session`)."""

    partition: int
    store: PartitionStore
    topics: LedgerTopics
    reader: LogReader
    producer: AIOKafkaProducer
    delivered: int | None = None
    state: PartitionState | None = None
    closed: bool = False
    retired: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def read_range(self, start: int, end: int) -> list[tuple[int, bytes]]:
        records: list[tuple[int, bytes]] = []
        tp = TopicPartition(self.topics.transactions, self.partition)
        await self.reader.read(tp, start, end, lambda chunk: records.extend((r.offset, r.value) for r in chunk))
        log.warning("partition %d: read offsets %d..%d the consumer skipped (%d records)", self.partition, start,
                    end - 1, len(records))  # fmt: skip
        return records

    async def commit(self, entries: Sequence[tuple[bytes, bytes]], relays: dict[int, list[bytes]]) -> int:
        async with self.lock:
            if self.closed:
                raise Fenced(f"partition {self.partition}: the session was closed")
            try:
                return await asyncio.wait_for(self._commit(entries, relays), COMMIT_TIMEOUT_S)
            except FENCING_ERRORS as exc:
                self.closed = True
                raise Fenced(f"partition {self.partition}: fenced by a newer writer ({exc!r})") from exc
            except KafkaError as exc:
                if not self.retired:
                    raise
                # Revoked: the new owner's InitProducerId is fencing this transaction. When that fence and our
                # EndTxn cross, Kafka 4.0's coordinator can fail the EndTxn with an IllegalStateException, which
                # reaches us as an unknown error instead of ProducerFenced; the fence aborts the transaction, and
                # either way the new owner restores whatever did commit. Outside a revocation it stops the worker.
                self.closed = True
                raise Fenced(f"partition {self.partition}: revoked, and its commit failed ({exc!r})") from exc

    async def _commit(self, entries: Sequence[tuple[bytes, bytes]], relays: dict[int, list[bytes]]) -> int:
        producer = self.producer
        sent: list[asyncio.Future[Any]] = []
        try:
            await producer.begin_transaction()
            batch = producer.create_batch()
            for key, value in entries:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    sent.append(await producer.send_batch(batch, self.topics.changelog, partition=self.partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            last = await producer.send_batch(batch, self.topics.changelog, partition=self.partition)
            sent.append(last)
            for destination, records in relays.items():
                for record in records:
                    sent.append(await producer.send(self.topics.transactions, value=record, partition=destination))
            await producer.commit_transaction()
            return last.result().offset + batch.record_count() - 1  # the batch's base offset, plus its records
        finally:
            for future in sent:  # a failed commit fails these too; the commit's own error says why
                future.add_done_callback(_retrieve)

    def checkpoint(self, entries: Sequence[tuple[bytes, bytes]], changelog_offset: int) -> None:
        # A retired session's store may already have been restored by its successor, past this commit.
        if not self.retired:
            self.store.apply(entries, changelog_offset)

    async def close(self) -> None:
        """Stop the producer; called between groups, so no transaction is open."""
        async with self.lock:
            self.closed = True
            await self.producer.stop()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def open_session(
    partition: int,
    store: PartitionStore,
    topics: LedgerTopics,
    reader: LogReader,
    catch_up: Callable[[KafkaSession], Awaitable[None]],
) -> KafkaSession:
    """Fence every earlier writer of the partition, bring the store up to the changelog's end, then apply what the
    group's committed offset says was consumed but the store does not have (`catch_up`)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=topics.bootstrap,
        transactional_id=f"{topics.app_id}-ledger-{partition}",
        acks="all",
        max_batch_size=MAX_BATCH_BYTES,
        request_timeout_ms=int(COMMIT_TIMEOUT_S * 1000),
    )
    started = time.monotonic()
    await producer.start()  # InitProducerId: from here on, no earlier writer of this partition can commit
    await track_topics(producer, [topics.changelog, topics.transactions])
    fenced_s = time.monotonic() - started
    restored = await restore(store, TopicPartition(topics.changelog, partition), reader)
    METRICS.changelog_records_restored_total += restored
    log.info("partition %d: fenced earlier writers in %.2f s; restored %d changelog records in %.2f s",
             partition, fenced_s, restored, time.monotonic() - started - fenced_s)  # fmt: skip
    session = KafkaSession(partition, store, topics, reader, producer)
    await catch_up(session)
    return session


async def restore(store: PartitionStore, tp: TopicPartition, reader: LogReader) -> int:
    """Apply the changelog past the store's checkpoint; a store ahead of the changelog is from another history."""
    end = await reader.end_offset(tp)
    store.discard_if_ahead(end)
    start = store.checkpoint + 1
    restored = 0

    def take(records: list) -> None:
        nonlocal restored
        restored += store.apply_log([(r.offset, r.key, r.value) for r in records])

    if start < end:
        await reader.read(tp, start, end, take)
    return restored
