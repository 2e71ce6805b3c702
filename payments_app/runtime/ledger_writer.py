"""The worker's one writer to the ledger's topics: a transactional producer whose transactions span its partitions.

A Kafka transaction costs the broker about 2.2 ms of CPU whatever it holds (`bench.transaction_cost`): one per
partition per commit made transactions most of the cost of single-transfer requests. So a commit is one
transaction for every partition in its group, as in Kafka Streams' exactly-once v2 (KIP-447):

* The transactional id is fixed per worker (`{app}-ledger-{group instance id}`): a worker started again takes it
  over, which fences its previous incarnation and aborts the transaction that one left open.
* A worker that lost partitions to another is fenced by the consumer group: each transaction commits the consumed
  offsets under the generation and member of the assignment its sessions were opened in (a `Tenure`), which the
  group coordinator refuses once the group has moved on (`txn_offsets`). The offsets are sent after every record
  of the transaction was acknowledged, so a transaction that passed that check before a rebalance is in the log
  when the new owner opens, and the new owner waits for it to end (`kafka_session.LogReader.stable_end`).
* The producer's transactions time out after `transaction_timeout_s` (the group's session timeout by default): a
  worker killed, paused or cut off in the middle of one holds a new owner up no longer than that, which is about
  when the group notices it is gone; when it comes back it is fenced (the broker aborted its transaction and
  bumped its epoch), replaces its producer and opens its partitions again if they are still its own. A commit
  that outlives the timeout on a live worker (a broker restart) ends the same way.
* A commit the brokers do not finish within `commit_timeout_s` (the transaction timeout and 5 s: a node paused or
  killed in the middle of it, two of three nodes down) ends as if fenced: its outcome is unknown, the producer is
  discarded, and a new one waits for a producer id (for up to `BROKER_WAIT_S`) before the partitions open again
  from what the log holds. So does a commit one of whose requests fails with an error Kafka calls retriable, or
  times out (a batch whose partition has had no leader for the request timeout: the node that led it was killed):
  such a transaction can no longer commit, and a new producer's id aborts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced, TransactionCoordinatorFenced

from payments_app.domain.checks import require
from payments_app.runtime.broker_waits import BROKER_WAIT_S, passes, until_answered
from payments_app.runtime.commit import Fenced, PartitionCommit
from payments_app.runtime.faust_fixes import track_topics
from payments_app.runtime.metrics import COMMIT_SECONDS
from payments_app.runtime.txn_offsets import GroupMember, StaleMember, commit_offsets

log = logging.getLogger(__name__)

#: the producer's batches: large, so a group's changelog writes cost few requests (the broker takes up to 1 MiB)
MAX_BATCH_BYTES = 900_000
PRODUCER_FENCING_ERRORS = (ProducerFenced, InvalidProducerEpoch, TransactionCoordinatorFenced)
STOP_TIMEOUT_S = 5.0
#: a commit still running this long past the transaction timeout has been aborted by the broker (unless its end
#: was already under way): waiting longer cannot make it commit
COMMIT_TIMEOUT_MARGIN_S = 5.0


class StaleAssignment(Fenced):
    """The group has moved on from the assignment: its partitions are being handed out again."""


class WriterStopped(Fenced):
    """The worker is stopping: its partitions' next owner applies what this commit held."""


class ProducerReplaced(Fenced):
    """The producer's epoch is over (its transaction timed out, or a newer incarnation took the id), or the end of
    its transaction is unknown (`EndUnknown`); the writer starts a new producer, and the partitions still assigned
    here are opened again on it."""


class EndUnknown(Exception):
    """Ending the transaction failed with an error that is not a fence (aiokafka retries the retriable ones): it
    may have committed or not, and the producer cannot go on. Kafka 4.0's coordinator answers an EndTxn that
    crosses the InitProducerId of a newer incarnation with an internal error (UNKNOWN_SERVER_ERROR) rather than
    PRODUCER_FENCED. Either outcome is safe to read back from the log, so it is handled as a fence: a new producer,
    and the partitions opened again (restored from the changelog, caught up from the committed offsets)."""


class LedgerWriter:
    """One transaction at a time, for every partition this worker writes; a new producer after a fence."""

    def __init__(self, bootstrap: str, transactional_id: str, topics: list[str], transaction_timeout_s: float) -> None:
        self.bootstrap = bootstrap
        self.transactional_id = transactional_id
        self.topics = topics
        self.transaction_timeout_s = transaction_timeout_s
        #: a commit not done by then ends as a fence: a stuck send must not hang forever, and past the transaction
        #: timeout the broker has aborted it (or is finishing its end); which one, the log says
        self.commit_timeout_s = transaction_timeout_s + COMMIT_TIMEOUT_MARGIN_S
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._stopped = False

    async def ready(self) -> None:
        """Hold the transactional id (InitProducerId): an earlier incarnation of this worker can commit nothing
        more, and a transaction it left open is aborted. Once held, a partition opening does not wait for the
        commit under way."""
        if self._producer is not None:
            return
        async with self._lock:
            await self._started()

    async def commit(self, parts: Sequence[PartitionCommit], member: GroupMember) -> list[int]:
        """Every part in one transaction, with the offsets consumed as `member`; the changelog offset of each
        part's last entry. Raises StaleAssignment or ProducerReplaced when fenced (nothing of it committed)."""
        async with self._lock:
            if self._stopped:
                raise WriterStopped(f"{self.transactional_id}: the worker is stopping")
            producer = await self._started()
            try:
                with COMMIT_SECONDS.time():
                    return await asyncio.wait_for(self._commit(producer, parts, member), self.commit_timeout_s)
            except StaleMember as exc:
                await self._abort(producer)
                raise StaleAssignment(f"generation {member.generation}: {exc}") from exc
            except (TimeoutError, KafkaError, EndUnknown) as exc:
                why = self._replaced_because(exc)
                if why is None:
                    raise
                log.warning("%s: producer %s replaced: %s", self.transactional_id, _epoch(producer), why)
                await self._discard(producer)
                raise ProducerReplaced(f"{self.transactional_id}: {why}") from exc

    def _replaced_because(self, exc: BaseException) -> str | None:
        """Why a failed commit ends with its producer replaced and its partitions read back (it was fenced, or its
        outcome is unknown); None for a failure that stops the worker."""
        if isinstance(exc, TimeoutError):
            return f"commit timed out: the brokers did not finish it within {self.commit_timeout_s:.0f} s"
        if isinstance(exc, (*PRODUCER_FENCING_ERRORS, EndUnknown)):
            return f"fenced ({exc!r})"
        if passes(exc):
            return f"a request failed ({exc!r}); its transaction is abandoned"
        return None

    async def _commit(
        self, producer: AIOKafkaProducer, parts: Sequence[PartitionCommit], member: GroupMember
    ) -> list[int]:
        changelog, transactions = self.topics
        sent: list[asyncio.Future[Any]] = []
        lasts: list[tuple[asyncio.Future[Any], int]] = []
        try:
            await producer.begin_transaction()
            for part in parts:
                require(bool(part.entries), f"partition {part.partition}: a commit without changelog entries")
                in_last_batch = await send_in_batches(producer, changelog, part.partition, part.entries, sent)
                lasts.append((sent[-1], in_last_batch))
                for destination, records in part.relays.items():
                    for record in records:
                        sent.append(await producer.send(transactions, value=record, partition=destination))
            await asyncio.gather(*sent)  # every record in the log before the offsets are checked
            consumed = {TopicPartition(transactions, part.partition): part.consumed for part in parts}
            await commit_offsets(producer, member, consumed)
            await end_transaction(producer)
        finally:
            for future in sent:  # a failed commit fails these too; the commit's own error says why
                future.add_done_callback(_retrieve)
        return [future.result().offset + count - 1 for future, count in lasts]  # base offset, plus its records

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = await self._new_producer(deadline=time.monotonic() + max(self.commit_timeout_s, BROKER_WAIT_S))
            await track_topics(producer, self.topics)
            self._producer = producer
            log.info("%s: producer %s started", self.transactional_id, _epoch(producer))
        return self._producer

    async def _new_producer(self, deadline: float) -> AIOKafkaProducer:
        """A started producer holding the transactional id; a broker that does not answer yet (restarting, two of
        three nodes down) is waited for until `deadline`."""

        async def start() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                transactional_id=self.transactional_id,
                transaction_timeout_ms=int(self.transaction_timeout_s * 1000),
                acks="all",
                max_batch_size=MAX_BATCH_BYTES,
                request_timeout_ms=int(self.transaction_timeout_s * 1000),
            )
            try:  # InitProducerId: aiokafka retries it for as long as the coordinator asks
                await asyncio.wait_for(producer.start(), max(0.0, deadline - time.monotonic()))
            except (KafkaError, TimeoutError):
                await producer.stop()
                raise
            return producer

        try:
            return await until_answered(start, f"{self.transactional_id}: a producer",
                                        within_s=deadline - time.monotonic())  # fmt: skip
        except TimeoutError:
            raise TimeoutError(f"{self.transactional_id}: the transaction coordinator gave no producer id "
                               f"in time") from None  # fmt: skip

    async def _abort(self, producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.abort_transaction(), self.transaction_timeout_s)
        except PRODUCER_FENCING_ERRORS as exc:
            await self._discard(producer)
            raise ProducerReplaced(f"{self.transactional_id}: fenced while aborting ({exc!r})") from exc

    async def _discard(self, producer: AIOKafkaProducer) -> None:
        self._producer = None
        try:
            await asyncio.wait_for(producer.stop(), STOP_TIMEOUT_S)
        except (KafkaError, TimeoutError):
            log.warning("a fenced producer did not stop cleanly", exc_info=True)
        _retrieve_failures(producer)

    async def stop(self) -> None:
        """Stop after the commit under way, if any; no commit goes through this writer afterwards."""
        async with self._lock:
            self._stopped = True
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None


async def send_in_batches(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    entries: Iterable[tuple[bytes, bytes]],
    sent: list[asyncio.Future[Any]],
) -> int:
    """Send `entries` to one partition through the producer's batch API, a request's worth at a time, adding each
    batch's future to `sent`; return how many records the last batch holds. Several times cheaper per message
    than a `send` each (`payments layers`)."""
    batch = producer.create_batch()
    for key, value in entries:
        if batch.append(key=key, value=value, timestamp=None) is None:
            sent.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
    sent.append(await producer.send_batch(batch, topic, partition=partition))
    return batch.record_count()


async def end_transaction(producer: AIOKafkaProducer) -> None:
    """Commit the producer's transaction; a failure other than a fence leaves its outcome unknown (`EndUnknown`)."""
    try:
        await producer.commit_transaction()
    except PRODUCER_FENCING_ERRORS:
        raise
    except KafkaError as exc:
        raise EndUnknown(f"EndTxn failed: {exc!r}") from exc


@dataclass(eq=False)
class Tenure:
    """One assignment's right to write: the worker's writer and the group member the assignment was given to. The
    sessions of one assignment share it, so a group of their records commits in one transaction; once fenced, it
    commits nothing more."""

    writer: LedgerWriter
    member: GroupMember
    fenced: Fenced | None = None

    async def commit(self, parts: Sequence[PartitionCommit]) -> list[int]:
        if self.fenced is not None:
            raise type(self.fenced)(f"already fenced: {self.fenced}")
        try:
            return await self.writer.commit(parts, self.member)
        except Fenced as exc:
            self.fenced = exc
            raise

    @property
    def replaced(self) -> bool:
        """Fenced because the producer was replaced, not because the assignment is over."""
        return isinstance(self.fenced, ProducerReplaced)


def _epoch(producer: AIOKafkaProducer) -> str:
    txn = producer._txn_manager
    return f"id {txn.producer_id} epoch {txn.producer_epoch}"


def _retrieve_failures(producer: AIOKafkaProducer) -> None:
    """Mark as seen the fence that aiokafka's sender set on the discarded producer's own futures (the batches it
    had not sent, their drain waiters, its transaction waiter), which nobody awaits: else each is logged as an
    ERROR, "Future exception was never retrieved", when it is collected."""
    accumulator = producer._message_accumulator
    queued = [batch for queue in accumulator._batches.values() for batch in queue]
    batches = [*queued, *accumulator._pending_batches]
    futures = [future for batch in batches for future in (batch.future, batch._drain_waiter)]
    for future in [*futures, producer._txn_manager._transaction_waiter]:
        if future.done():
            _retrieve(future)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
