"""Which ledger partitions this worker writes now: a session per assigned partition, opened on assignment.

Faust tells us of assignments; each assigned partition's session is opened in the background (wait for the
previous owner, restore, catch up) and the agent waits for it before applying that partition's records. The
sessions of one assignment share its `Tenure`, so a group commits in one transaction. On revocation a session is
retired at once: no new group uses it, and a group already staged still commits if the group coordinator still
accepts the assignment's offsets, or is fenced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import TopicPartition

from payments_app.runtime.commit import Group, GroupResult
from payments_app.runtime.kafka_session import KafkaSession, LedgerTopics, LogReader, open_session
from payments_app.runtime.ledger_writer import LedgerWriter, Tenure
from payments_app.runtime.metrics import METRICS, PARTITION_OPEN_SECONDS
from payments_app.runtime.standby import StandbyFollower
from payments_app.runtime.txn_offsets import GroupMember
from tables.ledger import LedgerStores, PartitionStore

log = logging.getLogger(__name__)


class LedgerSessions:
    def __init__(
        self,
        topics: LedgerTopics,
        stores: LedgerStores,
        standby: StandbyFollower,
        new_reader: Callable[[], LogReader],
        partitions: int,
        model: str,
        writer: LedgerWriter,
        on_committed: Callable[[GroupResult], None],
        on_failed: Callable[[BaseException], None],
    ) -> None:
        self.topics = topics
        self.partitions = partitions
        self.model = model
        self.writer = writer
        self.stores = stores
        self.standby = standby
        self._new_reader = new_reader  # made on first use: its clients start then
        self._reader: LogReader | None = None
        self._tenure: Tenure | None = None
        self._opening: dict[int, asyncio.Task[KafkaSession]] = {}
        self._handed: dict[int, int] = {}  # per partition, the last offset the consumer handed the agent
        self.assignment_known = False  # false until the group first gives this worker an assignment
        #: told of every catch-up group's result, as the agent is of its own (counted, waiting clients answered)
        self.on_committed = on_committed
        #: told of a partition that could not open (restore or catch-up raised): the worker stops, as it does for a
        #: group the agent could not stage or commit
        self.on_failed = on_failed

    @property
    def reader(self) -> LogReader:
        if self._reader is None:
            self._reader = self._new_reader()
        return self._reader

    def assign(self, partitions: set[int], member: GroupMember) -> None:
        """Open a session for every newly assigned partition, in the background, under `member`'s assignment."""
        self.assignment_known = True
        tenure = self._tenure
        if tenure is None or tenure.member != member or tenure.fenced is not None:
            tenure = self._tenure = Tenure(self.writer, member)
        for partition in sorted(partitions - set(self._opening)):
            self.standby.release(partition)
            opening = self._open(partition, tenure)
            task = asyncio.get_running_loop().create_task(opening, name=f"open-ledger-{partition}")
            task.add_done_callback(self._opened)
            self._opening[partition] = task

    def handing(self, partition: int, offset: int) -> None:
        """The consumer hands the agent this record of the partition (noted before the agent looks its session
        up): a session opened again applies every record handed so far, since none is handed twice. Records of
        partitions not assigned here are not noted."""
        if partition in self._opening and offset > self._handed.get(partition, -1):
            self._handed[partition] = offset

    def revoke(self, partitions: set[int]) -> None:
        """The partitions' assignment is over: retire their sessions."""
        for partition in partitions:
            self._handed.pop(partition, None)
        self._retire(partitions)

    def _retire(self, partitions: set[int]) -> None:
        """Retire the partitions' sessions now: no new group uses them, and none writes its store again (each asks
        whether its opening is still its partition's: `KafkaSession.current`), opened or still opening."""
        for partition in partitions:
            self._opening.pop(partition, None)

    def reopen_replaced(self) -> None:
        """Open again, on the writer's new producer, the partitions still assigned here whose sessions' producer
        was fenced (`ProducerReplaced`): their states hold work that never committed. The new session applies
        every record handed so far (`handing`). Partitions whose assignment is over wait for the group to hand
        them out again."""
        for partition, task in list(self._opening.items()):
            if task.done() and not task.cancelled() and task.exception() is None:
                session = task.result()
                if session.writer.replaced:
                    log.warning("partition %d: its producer was fenced; opening it again", partition)
                    self._retire({partition})
                    self.assign({partition}, session.writer.member)

    def _opened(self, task: asyncio.Task[KafkaSession]) -> None:
        """A partition that could not open stops the worker (`on_failed`), unless its session was retired meanwhile
        (revoked, or the worker is stopping and closed the reader under it): nothing uses that session. A session
        whose producer was replaced while it opened (its catch-up commit was dropped) opens again at once: no later
        commit of the agent's may come to notice it."""
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            if task not in self._opening.values():
                log.info("%s, retired while opening, ended with %r", task.get_name(), exc)
                return
            self.on_failed(exc)
        elif task.result().writer.replaced:
            self.reopen_replaced()

    async def session(self, partition: int) -> KafkaSession | None:
        """The open session of an assigned partition (waiting for it to open); None if not assigned here."""
        task = self._opening.get(partition)
        return None if task is None else await task

    def opened(self, partition: int) -> KafkaSession | None:
        """The session of an assigned partition, once open; None otherwise."""
        task = self._opening.get(partition)
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    def store(self, partition: int) -> PartitionStore | None:
        """The store of an assigned partition whose session is open, for reads; None otherwise."""
        session = self.opened(partition)
        return None if session is None else session.store

    def open_partitions(self) -> set[int]:
        return {p for p in self._opening if self.store(p) is not None}

    def assigned(self) -> set[int]:
        return set(self._opening)

    async def _open(self, partition: int, tenure: Tenure) -> KafkaSession:
        started = time.monotonic()
        store = self.stores[partition]
        opening = asyncio.current_task()

        def current() -> bool:
            return self._opening.get(partition) is opening

        session = await open_session(partition, store, self.topics, self.reader, tenure, current, self._catch_up)
        PARTITION_OPEN_SECONDS.observe(time.monotonic() - started)
        METRICS.partitions_opened_total += 1
        return session

    async def _catch_up(self, session: KafkaSession) -> None:
        """Apply the records that the store lacks below the group's committed offset (see `Group.catch_up`), and
        those handed to an earlier session of this assignment (`handing`)."""
        committed = await self.reader.committed(TopicPartition(self.topics.transactions, session.partition))
        end = max(committed or 0, self._handed.get(session.partition, -1) + 1)
        if end == 0:
            return
        group = Group(self.partitions, self.model)
        await group.catch_up(session, end)
        result = await group.commit()
        self.on_committed(result)

    async def stop(self) -> None:
        self.revoke(set(self._opening))
        await self.writer.stop()
        if self._reader is not None:
            await self._reader.stop()
        self.stores.close()
