"""Consumed offsets committed inside a Kafka transaction, fenced by the consumer group (KIP-447).

A worker writes every partition it owns through one transactional producer, so a new owner of a partition cannot
fence the old one by taking its transactional id. The group fences it instead: each transaction also commits the
consumed offsets with `TxnOffsetCommit` v3, which carries the group generation and member id of the assignment the
writer works under, and the group coordinator refuses it (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
FENCED_INSTANCE_ID) once the group has moved on. The caller then aborts the transaction: nothing of it is visible.

aiokafka 0.14 sends only `TxnOffsetCommit` v0, which has no generation (accepted from anyone holding the
transactional id), so the request is built here and sent through the producer's client, after `AddOffsetsToTxn`
(without which the broker answers INVALID_TXN_STATE). Both use aiokafka's private producer API
(`_sender`, `_txn_manager`): aiokafka stays pinned. Proven against our broker on branch `spike/kip447-fencing`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiokafka.errors as Errors
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.client import ConnectionGroup, CoordinationType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.transaction import AddOffsetsToTxnRequest
from aiokafka.protocol.types import CompactArray, CompactString, Int16, Int32, Int64, Schema, TaggedFields

TXN_OFFSET_COMMIT = 28
#: the group has moved on from the member that wrote the request: a new generation, or the member was removed
#: (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID)
STALE_MEMBER_CODES = frozenset({22, 25, 27, 82})
#: this producer's epoch is over: a newer one took the transactional id, or its transaction timed out
PRODUCER_FENCED_CODES = frozenset({47, 90})  # INVALID_PRODUCER_EPOCH, PRODUCER_FENCED
_COORDINATOR_MOVED = frozenset({15, 16})  # COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
_TRY_AGAIN = frozenset({7, 14, 51})  # REQUEST_TIMED_OUT, COORDINATOR_LOAD_IN_PROGRESS, CONCURRENT_TRANSACTIONS
RETRY_BACKOFF_S = 0.05
#: how long a request is sent again while its coordinator cannot be reached or says to: a killed node stays the
#: coordinator until the controller fences it (9 s) and the group's or transaction's state log moves, so a bound
#: in tries (100 at 50 ms gave up after 5 s) stopped the worker; the commit's own time-out usually ends it first
COORDINATOR_WAIT_S = 30.0


class StaleMember(Exception):
    """The group coordinator refused the offsets: the assignment this writer worked under is over."""


@dataclass(frozen=True, slots=True)
class GroupMember:
    """Who consumed the offsets: the group, and the generation and member of the assignment (from its join)."""

    group_id: str
    generation: int
    member_id: str
    instance_id: str | None


class TxnOffsetCommitResponse_v3(Response):
    API_KEY = TXN_OFFSET_COMMIT
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(("partition_index", Int32), ("error_code", Int16), ("tags", TaggedFields))),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )  # fmt: skip


class TxnOffsetCommitRequest_v3(RequestStruct):
    API_KEY = TXN_OFFSET_COMMIT
    API_VERSION = 3
    FLEXIBLE_VERSION = True  # aiokafka then writes request header v2 and reads response header v1
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("committed_offset", Int64),
                ("committed_leader_epoch", Int32),
                ("committed_metadata", CompactString("utf-8")),
                ("tags", TaggedFields),
            )),
            ("tags", TaggedFields),
        )),
        ("tags", TaggedFields),
    )  # fmt: skip


class TxnOffsetCommitV3(Request[TxnOffsetCommitRequest_v3]):
    """Offers only v3: against a broker without it, aiokafka raises instead of sending an unfenced v0."""

    API_KEY = TXN_OFFSET_COMMIT

    def __init__(self, fields: tuple[Any, ...]) -> None:
        self._fields = fields

    def build(self, request_struct_class: type[TxnOffsetCommitRequest_v3]) -> TxnOffsetCommitRequest_v3:
        return request_struct_class(*self._fields)


async def commit_offsets(
    producer: AIOKafkaProducer, member: GroupMember, offsets: Mapping[TopicPartition, int]
) -> None:
    """Make `offsets` (next offset to consume, per partition) part of the producer's open transaction, as `member`.

    Call it after every record of the transaction was acknowledged: a transaction whose offsets were accepted
    before a rebalance then has all its records in the log already, where a new owner waiting for the partitions'
    open transactions to end sees them (`kafka_session.LogReader.stable_end`). Raises StaleMember, or
    ProducerFenced; either way the caller must abort the transaction.
    """
    txn = producer._txn_manager
    if txn._txn_consumer_group != member.group_id:
        request = AddOffsetsToTxnRequest(txn.transactional_id, txn.producer_id, txn.producer_epoch, member.group_id)
        await _send(producer, CoordinationType.TRANSACTION, txn.transactional_id, request, lambda r: [r.error_code])
        txn.consumer_group_added(member.group_id)
    by_topic: dict[str, list[tuple[Any, ...]]] = {}
    for tp, offset in sorted(offsets.items()):
        by_topic.setdefault(tp.topic, []).append((tp.partition, offset, -1, "", {}))
    fields = (txn.transactional_id, member.group_id, txn.producer_id, txn.producer_epoch, member.generation,
              member.member_id, member.instance_id, [(t, parts, {}) for t, parts in by_topic.items()], {})  # fmt: skip
    await _send(producer, CoordinationType.GROUP, member.group_id, TxnOffsetCommitV3(fields), _partition_codes)


def _partition_codes(response: Any) -> list[int]:
    return [code for _name, partitions, _tags in response.topics for _index, code, _ptags in partitions]


async def _send(producer: AIOKafkaProducer, kind: CoordinationType, key: str, request: Any, codes: Any) -> None:
    """Send `request` to the coordinator of `key`, again while the broker says to or cannot be reached (as
    aiokafka's own transactional requests do), for up to `COORDINATOR_WAIT_S`; raise on any other error. Raises
    KafkaTimeoutError when the time is up: the transaction's outcome is then unknown, as after any time-out."""
    sender = producer._sender
    deadline = time.monotonic() + COORDINATOR_WAIT_S
    while time.monotonic() < deadline:
        node_id = await sender._find_coordinator(kind, key)
        try:
            response = await producer.client.send(node_id, request, group=ConnectionGroup.COORDINATION)
        except Errors.KafkaError as exc:
            if not exc.retriable:
                raise
            sender._coordinator_dead(kind)
            await asyncio.sleep(RETRY_BACKOFF_S)
            continue
        errors = {code for code in codes(response) if code}
        if not errors:
            return
        if errors & PRODUCER_FENCED_CODES:
            raise Errors.ProducerFenced()
        if errors & STALE_MEMBER_CODES:
            raise StaleMember(f"group {key}: the coordinator refused the offsets (error codes {sorted(errors)})")
        if errors & _COORDINATOR_MOVED:
            sender._coordinator_dead(kind)
        elif not errors <= _TRY_AGAIN:
            raise Errors.for_code(min(errors - _TRY_AGAIN))(f"{type(request).__name__} to the {kind.name} coordinator")
        await asyncio.sleep(RETRY_BACKOFF_S)
    raise Errors.KafkaTimeoutError(f"{type(request).__name__}: no answer from the {kind.name} coordinator in "
                                   f"{COORDINATOR_WAIT_S:.0f} s")  # fmt: skip
