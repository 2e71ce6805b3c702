"""Standby replicas: keep the stores of partitions this worker would take over up to date, so a takeover restores
only the last few changelog records instead of a partition's whole history.

For each partition, the standbys are the `replicas` workers after its owner in the sorted list of members (so
with two workers, each follows the other's partitions). A follower reads the changelog (read_committed) into
the same stores the sessions use; a partition stops being followed the moment a session is opened for it, and
every apply skips records the store already has, so a follower and a restore never disagree.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from payments_app.runtime.broker_waits import REQUEST_TIMEOUT_MS, end_offsets
from payments_app.runtime.metrics import METRICS
from tables.ledger import LedgerStores

log = logging.getLogger(__name__)

POLL_MS = 500
MAX_RECORDS = 10_000
IDLE_S = 1.0
#: a standby's fetch waits for this much changelog, or FETCH_WAIT_MS: with the broker answering at the first byte,
#: each commit's handful of entries was a fetch of its own (under single-transfer requests, about 30% of a worker's
#: fetch requests; BENCHMARKS.md). A standby then lags by up to the wait, which a takeover reads from the changelog
#: like any other gap.
FETCH_MIN_BYTES = 256 * 1024
FETCH_WAIT_MS = 500


def standby_partitions(owners: Mapping[int, str], me: str, replicas: int) -> set[int]:
    """The partitions `me` should follow: those whose next `replicas` members after the owner include `me`."""
    members = sorted(set(owners.values()) | {me})
    followed = set()
    for partition, owner in owners.items():
        if owner == me or replicas <= 0:
            continue
        start = members.index(owner)
        standbys = [members[(start + n) % len(members)] for n in range(1, len(members))][:replicas]
        if me in standbys:
            followed.add(partition)
    return followed


class StandbyFollower:
    def __init__(self, bootstrap: str, changelog_topic: str, stores: LedgerStores) -> None:
        self.bootstrap = bootstrap
        self.topic = changelog_topic
        self.stores = stores
        self.partitions: set[int] = set()

    def follow(self, partitions: set[int]) -> None:
        self.partitions = set(partitions)

    def release(self, partition: int) -> None:
        """Stop following a partition at once: a session is about to open it."""
        self.partitions.discard(partition)

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_min_bytes=FETCH_MIN_BYTES,
            fetch_max_wait_ms=FETCH_WAIT_MS,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
        await consumer.start()
        assigned: set[int] = set()
        try:
            while True:
                if self.partitions != assigned:
                    assigned = set(self.partitions)
                    await self._assign(consumer, assigned)
                if not assigned:
                    await asyncio.sleep(IDLE_S)
                    continue
                fetched = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
                for tp, records in fetched.items():
                    if tp.partition in self.partitions and records:  # not taken over during the fetch
                        batch = [(r.offset, r.key, r.value) for r in records]
                        METRICS.standby_records_applied_total += self.stores[tp.partition].apply_log(batch)
        finally:
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer, partitions: set[int]) -> None:
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if not tps:
            return
        ends = await end_offsets(consumer, tps, "standby: changelog ends")
        for tp in tps:
            if tp.partition not in self.partitions:
                continue  # a session took it over while the end offsets were read
            store = self.stores[tp.partition]
            store.discard_if_ahead(ends[tp])
            consumer.seek(tp, store.checkpoint + 1)
        log.info("standby: following ledger partitions %s", sorted(partitions))
