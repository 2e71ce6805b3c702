"""Read a range of the transactions topic directly, to fill a gap Faust's consumer left in a partition.

Faust can skip records around a rebalance (prefetched events dropped, then offsets committed past them; see
faust-streaming issues 216, 221 and 606). The ledger agent knows the last offset it applied in each
partition, so it notices a jump and reads the skipped records itself, in order, before going on.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from payments_app.local_kafka import parse_broker_url
from payments_app.settings import SETTINGS
from payments_app.topics import TRANSACTIONS_TOPIC

FETCH_TIMEOUT_MS = 1_000
MAX_EMPTY_FETCHES = 30


async def read_range(partition: int, start: int, end: int) -> list[tuple[int, bytes]]:
    """Records at offsets start..end-1 of one transactions partition (fewer only if the log lost them)."""
    tp = TopicPartition(TRANSACTIONS_TOPIC, partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=parse_broker_url(SETTINGS.broker_url), enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    records: list[tuple[int, bytes]] = []
    try:
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]
        consumer.seek(tp, max(start, first))
        empty = 0
        while empty < MAX_EMPTY_FETCHES:
            batch = await consumer.getmany(tp, timeout_ms=FETCH_TIMEOUT_MS)
            fetched = batch.get(tp, [])
            empty = 0 if fetched else empty + 1
            for record in fetched:
                if record.offset >= end:
                    return records
                records.append((record.offset, record.value))
            if records and records[-1][0] == end - 1:
                return records
        return records
    finally:
        await consumer.stop()
