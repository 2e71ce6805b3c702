"""A client submission at the worker that owns its partition: the id check, the conflict check, the apply and the
wait for a decision all happen where that partition's records are, with no read of another worker and no round trip
through the transactions topic.

The owner stages a submission straight into the ledger agent's open group (`runtime.commit.Pipeline.add_submitted`)
and answers once that group has committed: the transactions, their effects and their records reach the changelog in
one Kafka transaction, fenced like every other (a worker that lost the partition commits nothing, and the request
is retried at the new owner; the ids make that safe). The transactions topic carries what producers write to it
directly, and the relays between segments.

The owner remembers every submission it staged until its record is decided (`Intake._waiting`), so a resubmission,
or a conflicting one, is told so from the moment of the first; after that the partition's store has the record.
Whoever receives a request hands it to the owner (`web.views.submit`).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from payments_app.domain.commands import ClientTransaction, Command, Resolution
from payments_app.domain.ledger import TxRecord, transaction_key
from payments_app.runtime.commit import GroupResult, Session
from payments_app.runtime.metrics import DECISION_SECONDS
from payments_app.service.errors import Backlogged, NotOwner, Unavailable


class Verdict(enum.StrEnum):
    """What a submission of one transaction found (the web edge gives each its HTTP status)."""

    SUBMITTED = "submitted"  # new: applied now, committed before the answer
    KNOWN = "known"  # its id holds this same transaction: its record, or pending
    CONFLICT = "conflict"  # its id holds another transaction


class StagesSubmissions(Protocol):
    """The ledger agent's group commit (`runtime.commit.Pipeline`), which applies submissions too."""

    def add_submitted(self, session: Session, commands: Sequence[Command]) -> Awaitable[GroupResult]: ...

    def commit_running_s(self) -> float: ...


#: a commit under way this long is waiting for the brokers (normally one takes milliseconds): a new submission is
#: refused at once (503) rather than left to wait behind it
STALLED_COMMIT_S = 5.0


@dataclass(slots=True)
class Waiting:
    """A transaction submitted here and not yet decided, and the future its decision resolves."""

    tx: ClientTransaction | None  # None: only a reader waits (its record came another way)
    decided: asyncio.Future[TxRecord | None]
    committed: asyncio.Future[bool] | None = None  # its batch's commit: True once committed, False if dropped
    since: float = 0.0  # when it reached this owner (monotonic seconds)


Answer = tuple[Verdict, dict[str, Any]]


def conflict(tx: ClientTransaction, existing: dict[str, Any]) -> Answer:
    detail = f"id {tx.id!r} is already used by a different transaction"
    return Verdict.CONFLICT, {"error": "id_conflict", "detail": detail, "existing": existing}


class Intake:
    """Submissions at their partition's owner, from the id check to the decision.

    `pipeline` stages and commits them; `opened(partition)` is the partition's session if it is open here;
    `read(partition, key)` a value of its committed store (raising NotOwner if it is not open here); past
    `max_waiting` undecided submissions, new ones are refused (Backlogged), and while the brokers take no commit
    (too few replicas in sync, the leaders moving) too (Unavailable).
    """

    def __init__(
        self,
        pipeline: StagesSubmissions,
        opened: Callable[[int], Session | None],
        read: Callable[[int, str], dict[str, Any] | None],
        max_waiting: int,
    ) -> None:
        self.pipeline = pipeline
        self.opened = opened
        self.read = read
        self.max_waiting = max_waiting
        self._waiting: dict[int, dict[str, Waiting]] = defaultdict(dict)
        self.size = 0

    async def submit(self, partition: int, transactions: list[ClientTransaction], wait_s: float) -> list[Answer]:
        """Apply the new ones (committed before this returns) and answer each with its verdict and its record as it
        stands, or as decided within `wait_s`. Raises NotOwner if the partition is not open here (or left before
        the commit), Backlogged past `max_waiting`, Unavailable while a commit is stalled."""
        waiting = self._waiting[partition]
        answers: list[Answer] = []
        futures: dict[str, asyncio.Future[TxRecord | None]] = {}
        new: list[ClientTransaction] = []
        for tx in transactions:
            held = waiting.get(tx.id)
            if held is not None and held.tx is not None and held.committed is not None:
                if not await asyncio.shield(held.committed):
                    raise NotOwner(f"partition {partition}: left this worker before {tx.id!r} was committed")
                known = TxRecord.pending(held.tx).to_dict()
                answers.append((Verdict.KNOWN, known) if held.tx == tx else conflict(tx, known))
                futures[tx.id] = held.decided
                continue
            row = self.read(partition, transaction_key(tx.id))
            if row is not None:
                record = TxRecord.from_row(row)
                known = record.to_dict()
                answers.append((Verdict.KNOWN, known) if record.same_request(tx) else conflict(tx, known))
                continue
            answers.append((Verdict.SUBMITTED, TxRecord.pending(tx).to_dict()))
            new.append(tx)
        if new:
            await self._apply(partition, new, futures)
        if wait_s > 0 and futures:
            await asyncio.wait([asyncio.shield(f) for f in futures.values()], timeout=wait_s)
        return [self._settled(answer, futures, waited=wait_s > 0) for answer in answers]

    async def _apply(
        self, partition: int, new: list[ClientTransaction], futures: dict[str, asyncio.Future[TxRecord | None]]
    ) -> None:
        """Remember, then stage and commit: a resubmission meanwhile waits for the same commit. The commit goes on
        if the client goes away."""
        if self.size + len(new) > self.max_waiting:
            raise Backlogged(f"{self.size:,} submissions wait for a decision on this worker")
        session = self._committing(partition)
        commit = asyncio.ensure_future(self._commit(session, new))
        waiting = self._waiting[partition]
        loop, now = asyncio.get_running_loop(), time.monotonic()
        for tx in new:
            reader = waiting.get(tx.id)
            decided = reader.decided if reader is not None else loop.create_future()
            waiting[tx.id] = Waiting(tx, decided, commit, now)
            futures[tx.id] = decided
        self.size += len(new)
        if not await asyncio.shield(commit):
            raise NotOwner(f"partition {partition}: left this worker before its commit; nothing was applied")

    def _committing(self, partition: int) -> Session:
        """The partition's session, if it is open here and the brokers take this worker's commits."""
        if (stalled_s := self.pipeline.commit_running_s()) > STALLED_COMMIT_S:
            raise Unavailable(f"the brokers have not finished this worker's last commit in {stalled_s:.0f} s")
        session = self.opened(partition)
        if session is None:
            raise NotOwner(f"partition {partition} is not open on this worker")
        return session

    async def resolve(self, partition: int, command: Resolution) -> dict[str, Any] | None:
        """Post or void a reservation decided in `partition`: committed before this returns. The record as it then
        stands (None if the partition has no such id); a reservation posted or voided before stays as it was."""
        committed = await self.stage(partition, [command])
        for record in committed:
            if record.id == command.id:
                return record.to_dict()
        row = self.read(partition, transaction_key(command.id))
        return None if row is None else TxRecord.from_row(row).to_dict()

    async def stage(self, partition: int, commands: Sequence[Command]) -> list[TxRecord]:
        """Apply `commands` (not client transactions: those go through `submit`) in the partition's open group and
        wait for its commit; the records it changed there."""
        session = self._committing(partition)
        result = await self.pipeline.add_submitted(session, commands)
        if partition not in result.committed:
            raise NotOwner(f"partition {partition}: left this worker before its commit; nothing was applied")
        return result.transactions.get(partition, [])

    async def _commit(self, session: Session, new: list[ClientTransaction]) -> bool:
        """Stage `new` in the agent's open group; whether that group committed it here. Staging or committing that
        raises has stopped the worker (`runtime.commit.Pipeline`); the exception reaches the request too."""
        partition = session.partition
        try:
            result = await self.pipeline.add_submitted(session, new)
        except BaseException:
            self._forget(partition, new)
            raise
        if partition not in result.committed:
            self._forget(partition, new)
            return False
        return True  # the agent's report of the commit has resolved the waits of those it decided

    def _forget(self, partition: int, new: list[ClientTransaction]) -> None:
        """Submissions whose batch was not committed here: unknown again."""
        waiting = self._waiting.get(partition, {})
        for tx in new:
            held = waiting.get(tx.id)
            if held is not None and held.tx is tx:
                del waiting[tx.id]
                self.size -= 1

    @staticmethod
    def _settled(answer: Answer, futures: dict[str, asyncio.Future[TxRecord | None]], waited: bool) -> Answer:
        """The answer with the transaction's decision, if it has one; known if the client asked to wait for it."""
        verdict, body = answer
        future = futures.get(body["id"]) if verdict != Verdict.CONFLICT else None
        if future is None or not future.done() or future.result() is None:
            return answer
        return Verdict.KNOWN if waited else verdict, future.result().to_dict()

    async def lookup(self, partition: int, tx_id: str, wait_s: float) -> dict[str, Any] | None:
        """The transaction's record (None if unknown here); a pending one waited for up to `wait_s`.

        A transaction staged here is shown once its commit is: a batch a fence drops was never acknowledged, so
        its record was never there (NotOwner: the next owner answers)."""
        held = self._waiting[partition].get(tx_id)
        if held is not None and held.committed is not None and not await asyncio.shield(held.committed):
            raise NotOwner(f"partition {partition}: left this worker before {tx_id!r} was committed")
        row = self.read(partition, transaction_key(tx_id))
        record = None if row is None else TxRecord.from_row(row).to_dict()
        held = self._waiting[partition].get(tx_id)
        if held is None and record is not None and record["status"] == "pending" and wait_s > 0:
            held = self._waiting[partition][tx_id] = Waiting(None, asyncio.get_running_loop().create_future())
        if held is None:
            return record
        if wait_s > 0:
            decided = await _wait_for(held.decided, wait_s)
            if decided is not None:
                return decided.to_dict()
        return record or (None if held.tx is None else TxRecord.pending(held.tx).to_dict())

    def decided(self, partition: int, records: list[TxRecord]) -> None:
        """A commit's transaction records: resolve the waits of those now decided."""
        waiting = self._waiting.get(partition)
        if not waiting:
            return
        for record in records:
            if record.decided:
                held = waiting.pop(record.id, None)
                if held is not None:
                    self.size -= held.tx is not None
                    if held.tx is not None:
                        DECISION_SECONDS.observe(time.monotonic() - held.since)
                    if not held.decided.done():
                        held.decided.set_result(record)

    def release(self, partitions: set[int]) -> None:
        """Partitions that left this worker: their waits end with no answer (the new owner decides them)."""
        for partition in partitions:
            for held in self._waiting.pop(partition, {}).values():
                self.size -= held.tx is not None
                if not held.decided.done():
                    held.decided.set_result(None)


async def _wait_for(future: asyncio.Future[TxRecord | None], wait_s: float) -> TxRecord | None:
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout=wait_s)
    except TimeoutError:
        return None
