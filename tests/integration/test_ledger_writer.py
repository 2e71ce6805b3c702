"""The ledger writer's fencing against the real broker: a commit under the current assignment is visible; one under
an assignment the group has moved on from is refused by the group coordinator and aborted; a new owner's wait for
open transactions ends when the old owner's transaction does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from payments_app.runtime.commit import PartitionCommit
from payments_app.runtime.kafka_session import LogReader
from payments_app.runtime.ledger_writer import LedgerWriter, StaleAssignment, Tenure
from payments_app.runtime.txn_offsets import GroupMember
from payments_app.settings import bootstrap_servers

pytestmark = pytest.mark.broker


@pytest.fixture
async def names(broker_url: str) -> AsyncIterator[dict[str, str]]:
    run = uuid.uuid4().hex[:8]
    topics = {"changelog": f"w-{run}-changelog", "transactions": f"w-{run}-transactions", "group": f"w-{run}"}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(broker_url))
    await admin.start()
    await admin.create_topics([NewTopic(topics["changelog"], 2, 1), NewTopic(topics["transactions"], 2, 1)])
    await admin.close()
    yield topics


async def joined(bootstrap: str, names: dict[str, str], instance: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(names["transactions"], bootstrap_servers=bootstrap, group_id=names["group"],
                                group_instance_id=instance, enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)
    return consumer


def member_of(consumer: AIOKafkaConsumer) -> GroupMember:
    coordinator = consumer._coordinator
    return GroupMember(
        coordinator.group_id, coordinator.generation, coordinator.member_id, coordinator._group_instance_id
    )


async def committed_values(bootstrap: str, topic: str, partition: int) -> list[bytes]:
    reader = LogReader(bootstrap, "unused")
    tp = TopicPartition(topic, partition)
    values: list[bytes] = []
    try:
        end = await reader.stable_end(tp, 10)
        await reader.read(tp, 0, end, lambda records: values.extend(r.value for r in records))
    finally:
        await reader.stop()
    return values


async def test_a_commit_under_an_assignment_the_group_left_behind_is_refused_and_invisible(
    broker_url: str, names: dict[str, str]
) -> None:
    bootstrap = bootstrap_servers(broker_url)
    writer = LedgerWriter(bootstrap, f"{names['group']}-ledger-a", [names["changelog"], names["transactions"]], 10.0)
    first = await joined(bootstrap, names, "a")
    tenure = Tenure(writer, member_of(first))
    try:
        await tenure.commit([PartitionCommit(0, [(b"0/k", b"current")], {1: [b"relay"]}, 5)])
        second = await joined(bootstrap, names, "b")  # a rebalance: the group is at a newer generation
        try:
            while member_of(first).generation == tenure.member.generation:
                await first.getmany(timeout_ms=100)  # heartbeats until the first consumer rejoins too
            with pytest.raises(StaleAssignment):
                await tenure.commit([PartitionCommit(0, [(b"0/k", b"stale")], {1: [b"stale relay"]}, 6)])
            with pytest.raises(StaleAssignment):  # and nothing more under it
                await tenure.commit([PartitionCommit(0, [(b"0/k", b"later")], {}, 7)])
            assert await committed_values(bootstrap, names["changelog"], 0) == [b"current"]
            assert await committed_values(bootstrap, names["transactions"], 1) == [b"relay"]
            offsets = await first.committed(TopicPartition(names["transactions"], 0))
            assert offsets == 5  # the refused transaction's offsets did not commit either

            renewed = Tenure(writer, member_of(first))  # the writer itself is not fenced: the new assignment writes
            await renewed.commit([PartitionCommit(0, [(b"0/k", b"renewed")], {}, 8)])
            assert await committed_values(bootstrap, names["changelog"], 0) == [b"current", b"renewed"]
        finally:
            await second.stop()
    finally:
        await first.stop()
        await writer.stop()


async def test_a_new_owner_waits_until_the_old_owners_transaction_ends(broker_url: str, names: dict[str, str]) -> None:
    bootstrap = bootstrap_servers(broker_url)
    old_owner = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{names['group']}-old")
    await old_owner.start()
    reader = LogReader(bootstrap, names["group"])
    tp = TopicPartition(names["changelog"], 1)
    try:
        await old_owner.begin_transaction()
        await old_owner.send_and_wait(names["changelog"], b"in flight", key=b"1/k", partition=1)
        waiting = asyncio.create_task(reader.stable_end(tp, 10))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # the old owner's records are in the log, and its transaction is open
        await old_owner.commit_transaction()
        end = await asyncio.wait_for(waiting, 5)
        assert end == 2  # its record and the commit marker
    finally:
        await old_owner.stop()
        await reader.stop()
