"""Which ledger partitions this worker writes now: a session per assigned partition, opened on assignment.

Faust tells us of assignments; each assigned partition's session is opened in the background (fence, restore,
catch up) and the agent waits for it before applying that partition's records. On revocation a session is
retired at once (no new group uses it) and closed between commits once no group holds it, so a group already
staged still commits, or is fenced if another worker has taken the partition meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from pathlib import Path

from aiokafka import TopicPartition

from payments_app.codec import store_entries
from payments_app.metrics import METRICS, PARTITION_OPEN_SECONDS
from payments_app.runtime.commit import Group, Session
from payments_app.runtime.kafka_session import KafkaSession, LedgerTopics, LogReader, open_session
from payments_app.runtime.standby import StandbyFollower
from tables.ledger import LedgerStores, PartitionStore, StoreOptions

log = logging.getLogger(__name__)


def _mark_retired(task: asyncio.Task[KafkaSession]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().retired = True


class LedgerSessions:
    def __init__(
        self, topics: LedgerTopics, data_dir: Path, options: StoreOptions, partitions: int, model: str
    ) -> None:
        self.topics = topics
        self.partitions = partitions
        self.model = model
        self.stores = LedgerStores(data_dir / "ledger", options, store_entries)
        self.standby = StandbyFollower(topics.bootstrap, topics.changelog, self.stores)
        self._reader: LogReader | None = None
        self._opening: dict[int, asyncio.Task[KafkaSession]] = {}
        self._retired: list[asyncio.Task[KafkaSession]] = []
        self.assignment_known = False  # false until the group first gives this worker an assignment

    @property
    def reader(self) -> LogReader:
        if self._reader is None:
            self._reader = LogReader(self.topics.bootstrap, self.topics.app_id)
        return self._reader

    def assign(self, partitions: set[int]) -> None:
        """Open a session for every newly assigned partition, in the background."""
        self.assignment_known = True
        for partition in sorted(partitions - set(self._opening)):
            self.standby.release(partition)
            task = asyncio.get_running_loop().create_task(self._open(partition), name=f"open-ledger-{partition}")
            self._opening[partition] = task

    def revoke(self, partitions: set[int]) -> None:
        """Retire the partitions' sessions now: no new group uses them, and none writes its store again."""
        for partition in partitions:
            task = self._opening.pop(partition, None)
            if task is None:
                continue
            if task.done():
                _mark_retired(task)
            else:
                task.add_done_callback(_mark_retired)
            self._retired.append(task)

    async def session(self, partition: int) -> KafkaSession | None:
        """The open session of an assigned partition (waiting for it to open); None if not assigned here."""
        task = self._opening.get(partition)
        return None if task is None else await task

    def store(self, partition: int) -> PartitionStore | None:
        """The store of an assigned partition whose session is open, for reads; None otherwise."""
        task = self._opening.get(partition)
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return None
        return task.result().store

    def open_partitions(self) -> set[int]:
        return {p for p in self._opening if self.store(p) is not None}

    def assigned(self) -> set[int]:
        return set(self._opening)

    def failed(self) -> BaseException | None:
        """The first error that stopped a session from opening (the worker cannot serve that partition)."""
        for task in self._opening.values():
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    async def close_retired(self, in_use: Collection[Session] = ()) -> None:
        """Close retired sessions but those `in_use` (staged in a group not yet committed); the pipeline calls this
        between commits, so none of them has a commit under way."""
        retired, self._retired = self._retired, []
        for task in retired:
            try:
                session = await task
            except Exception:
                log.warning("a revoked partition's session had failed to open", exc_info=True)
                continue
            if any(session is busy for busy in in_use):
                self._retired.append(task)
            else:
                await session.close()

    async def _open(self, partition: int) -> KafkaSession:
        started = time.monotonic()
        session = await open_session(partition, self.stores[partition], self.topics, self.reader, self._catch_up)
        PARTITION_OPEN_SECONDS.observe(time.monotonic() - started)
        METRICS.partitions_opened_total += 1
        return session

    async def _catch_up(self, session: KafkaSession) -> None:
        """Apply records below the group's committed offset that the store lacks (see `Group.catch_up`)."""
        committed = await self.reader.committed(TopicPartition(self.topics.transactions, session.partition))
        if committed is None:
            return
        group = Group(self.partitions, self.model)
        await group.catch_up(session, committed)
        result = await group.commit()
        if result.fenced:
            log.warning("partition %d was taken by another worker while it was being opened", session.partition)

    async def stop(self) -> None:
        self.revoke(set(self._opening))
        await self.close_retired()
        if self._reader is not None:
            await self._reader.stop()
        self.stores.close()
