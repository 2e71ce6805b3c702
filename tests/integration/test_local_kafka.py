"""The project's own broker: it starts, carries records, stops, leaves no process, and starts again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devtools.local_kafka import LocalKafka

pytestmark = pytest.mark.broker


async def _round_trip(bootstrap: str, topic: str, values: list[bytes]) -> list[bytes]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    received: list[bytes] = []
    try:
        while len(received) < len(values):
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), timeout=30)
            for records in batch.values():
                received.extend(record.value for record in records)
    finally:
        await consumer.stop()
    return received


def test_start_produce_consume_stop_and_restart(tmp_path: Path) -> None:
    kafka = LocalKafka(data_dir=tmp_path / "kafka")
    kafka.start()
    pid = kafka.pid
    try:
        values = [f"record-{i}".encode() for i in range(5)]
        assert asyncio.run(_round_trip(kafka.bootstrap, "roundtrip", values)) == values
    finally:
        kafka.stop()
    assert pid is not None and not psutil.pid_exists(pid)

    kafka.start()
    try:
        again = [b"after-restart"]
        assert asyncio.run(_round_trip(kafka.bootstrap, "second", again)) == again
    finally:
        kafka.stop()
    assert kafka.pid is None
