"""How the ledger writer reads a failed commit: a refused assignment aborts the transaction and fences the tenure;
a fenced producer, or one whose transaction's end is unknown, is replaced and its partitions are to be opened again;
a commit the brokers never finish, or one whose request failed with a retriable error, likewise; any other failure is
raised as is.

The producer is a stand-in that records what the writer asked of it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    ProducerFenced,
    UnknownError,
)

from payments_app.runtime import ledger_writer
from payments_app.runtime.commit import Fenced, PartitionCommit
from payments_app.runtime.ledger_writer import LedgerWriter, ProducerReplaced, StaleAssignment, Tenure
from payments_app.runtime.txn_offsets import GroupMember, StaleMember

MEMBER = GroupMember("payments", 7, "member-1", "worker-a")
PART = PartitionCommit(0, [(b"0/m", b"{}")], {}, 1)


class RecordingProducer:
    def __init__(self, fail_begin: Exception | None = None, fail_end: Exception | None = None) -> None:
        self.fail_begin = fail_begin
        self.fail_end = fail_end
        self.calls: list[str] = []
        waiter = SimpleNamespace(done=lambda: False)
        self._txn_manager = SimpleNamespace(producer_id=1, producer_epoch=0, _transaction_waiter=waiter)
        self._message_accumulator = SimpleNamespace(_batches={}, _pending_batches=[])

    async def begin_transaction(self) -> None:
        self.calls.append("begin")
        if self.fail_begin is not None:
            raise self.fail_begin

    async def abort_transaction(self) -> None:
        self.calls.append("abort")

    async def commit_transaction(self) -> None:
        self.calls.append("commit")
        if self.fail_end is not None:
            raise self.fail_end

    async def stop(self) -> None:
        self.calls.append("stop")


async def nothing_to_send(self: Any, producer: Any, parts: Any, member: GroupMember) -> list[int]:
    """`LedgerWriter._commit` with no records: begin, the offsets, the end."""
    await producer.begin_transaction()
    await ledger_writer.commit_offsets(producer, member, {})
    await ledger_writer.end_transaction(producer)
    return [0]


def writer_with(producer: RecordingProducer) -> LedgerWriter:
    writer = LedgerWriter("127.0.0.1:1", "payments-ledger-worker-a", ["changelog", "transactions"], 15.0)
    writer._producer = producer  # type: ignore[assignment]
    return writer


async def test_a_refused_assignment_aborts_the_transaction_and_fences_the_tenure(monkeypatch: Any) -> None:
    async def refused(producer: Any, member: GroupMember, offsets: Any) -> None:
        raise StaleMember("error codes [22]")

    monkeypatch.setattr(ledger_writer, "commit_offsets", refused)
    monkeypatch.setattr(LedgerWriter, "_commit", nothing_to_send)
    producer = RecordingProducer()
    tenure = Tenure(writer_with(producer), MEMBER)
    with pytest.raises(StaleAssignment):
        await tenure.commit([PART])
    assert producer.calls == ["begin", "abort"]
    assert not tenure.replaced
    with pytest.raises(StaleAssignment):  # nothing more commits under it, and the producer is not asked
        await tenure.commit([PART])
    assert producer.calls == ["begin", "abort"]


async def test_a_fenced_producer_is_replaced_and_its_tenure_says_so() -> None:
    producer = RecordingProducer(fail_begin=ProducerFenced())
    writer = writer_with(producer)
    tenure = Tenure(writer, MEMBER)
    with pytest.raises(ProducerReplaced):
        await tenure.commit([PART])
    assert producer.calls == ["begin", "stop"]
    assert writer._producer is None  # the next commit starts a new producer
    assert tenure.replaced and isinstance(tenure.fenced, Fenced)


async def test_a_transaction_whose_end_failed_replaces_the_producer(monkeypatch: Any) -> None:
    """Kafka 4.0 answers an EndTxn crossing a newer incarnation's InitProducerId with UNKNOWN_SERVER_ERROR: the
    outcome is unknown, so the partitions are read back from the log on a new producer, as after a fence."""

    async def accepted(producer: Any, member: GroupMember, offsets: Any) -> None:
        producer.calls.append("offsets")

    monkeypatch.setattr(ledger_writer, "commit_offsets", accepted)
    monkeypatch.setattr(LedgerWriter, "_commit", nothing_to_send)
    producer = RecordingProducer(fail_end=KafkaError("Unexpected error during batch delivery"))
    writer = writer_with(producer)
    tenure = Tenure(writer, MEMBER)
    with pytest.raises(ProducerReplaced):
        await tenure.commit([PART])
    assert producer.calls == ["begin", "offsets", "commit", "stop"]
    assert writer._producer is None and tenure.replaced


async def test_any_other_failure_is_raised_as_is_and_fences_nothing() -> None:
    writer = writer_with(RecordingProducer(fail_begin=UnknownError()))
    tenure = Tenure(writer, MEMBER)
    with pytest.raises(KafkaError):
        await tenure.commit([PART])
    assert tenure.fenced is None


async def test_a_commit_the_brokers_never_finish_replaces_the_producer(monkeypatch: Any) -> None:
    """Two of three nodes down: no write reaches enough replicas, and the commit waits. Past the commit timeout its
    outcome is unknown, so it ends as a fence does (partitions read back from the log on a new producer), not as a
    failure that stops the worker."""

    async def never_acknowledged(self: Any, producer: Any, parts: Any, member: GroupMember) -> list[int]:
        await producer.begin_transaction()
        await asyncio.Event().wait()
        return [0]

    monkeypatch.setattr(LedgerWriter, "_commit", never_acknowledged)
    producer = RecordingProducer()
    writer = writer_with(producer)
    writer.commit_timeout_s = 0.05
    tenure = Tenure(writer, MEMBER)
    with pytest.raises(ProducerReplaced, match="commit timed out"):
        await tenure.commit([PART])
    assert producer.calls == ["begin", "stop"]
    assert writer._producer is None and tenure.replaced


@pytest.mark.parametrize("error", [NotLeaderForPartitionError(), KafkaTimeoutError(), NotEnoughReplicasError()])
async def test_a_commit_whose_request_failed_retriably_is_abandoned(monkeypatch: Any, error: Exception) -> None:
    """A killed node led a changelog partition: the batch sent to it fails once no leader is known for the request
    timeout. The transaction cannot commit any more, so it is abandoned as a fenced one is, not a worker stopped."""

    async def failed_send(self: Any, producer: Any, parts: Any, member: GroupMember) -> list[int]:
        await producer.begin_transaction()
        raise error

    monkeypatch.setattr(LedgerWriter, "_commit", failed_send)
    producer = RecordingProducer()
    writer = writer_with(producer)
    tenure = Tenure(writer, MEMBER)
    with pytest.raises(ProducerReplaced, match="a request failed"):
        await tenure.commit([PART])
    assert producer.calls == ["begin", "stop"]
    assert writer._producer is None and tenure.replaced
