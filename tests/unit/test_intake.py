"""The owner's side of a submission, with its store and the agent's group commit replaced by dicts: conflicts,
resubmissions, answers after the commit, waits for a decision, the backlog bound, and partitions that leave."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from payments_app.domain.commands import Command, Deposit, Transfer
from payments_app.domain.ledger import APPLIED, TxRecord, transaction_key
from payments_app.runtime.commit import GroupResult
from payments_app.service.errors import Backlogged, NotOwner, Unavailable
from payments_app.service.intake import STALLED_COMMIT_S, Intake, Verdict

PARTITION = 3
MAX_WAITING = 50_000
T1 = Transfer("t1", "alice", "bob", 100)


@dataclass
class FakeSession:
    partition: int = PARTITION


class FakePipeline:
    """Commits every batch it is given (or drops it, `fenced`), once `gate` is open; `decide` says what each
    transaction's record is after its commit (pending when absent)."""

    def __init__(self, owner: Intake) -> None:
        self.owner = owner
        self.staged: list[Command] = []
        self.fenced = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.decide: dict[str, TxRecord] = {}
        self.running_s = 0.0  # how long the commit under way has run

    def commit_running_s(self) -> float:
        return self.running_s

    async def add_submitted(self, session: FakeSession, commands: Sequence[Command]) -> GroupResult:
        self.staged.extend(commands)
        await self.gate.wait()
        if self.fenced:
            return GroupResult(fenced=[session.partition])
        records = [self.decide.get(tx.id) or TxRecord.pending(tx) for tx in commands]  # type: ignore[arg-type]
        self.owner.decided(session.partition, records)  # as the agent's report does, before the result
        return GroupResult(committed={session.partition: []}, transactions={session.partition: records})


@pytest.fixture
def store() -> dict[str, list[Any]]:
    return {}


@pytest.fixture
def owner(store: dict[str, list[Any]]) -> Intake:
    session = FakeSession()
    owner = Intake(
        None,  # type: ignore[arg-type]  # replaced below: the fake pipeline answers the intake it is given
        lambda partition: session if partition == PARTITION else None,  # type: ignore[arg-type, return-value]
        lambda partition, key: store.get(key),
        MAX_WAITING,
    )
    owner.pipeline = FakePipeline(owner)  # type: ignore[assignment]
    return owner


def pipeline(owner: Intake) -> FakePipeline:
    return owner.pipeline  # type: ignore[return-value]


def applied(tx: Transfer) -> TxRecord:
    return TxRecord(tx.id, "transfer", APPLIED, None, {"payer": tx.payer, "payee": tx.payee, "amount": tx.amount})


async def test_a_new_transaction_is_answered_once_committed_with_its_record_as_the_commit_left_it(store, owner) -> None:
    pipeline(owner).decide["t1"] = applied(T1)
    ((code, body),) = await owner.submit(PARTITION, [T1], wait_s=0)
    assert (code, body) == (Verdict.SUBMITTED, applied(T1).to_dict())
    t2 = Transfer("t2", "alice", "bob", 5)  # parked in a collection round: still pending after its commit
    ((code, body),) = await owner.submit(PARTITION, [t2], wait_s=0)
    assert code == Verdict.SUBMITTED and body["status"] == "pending" and body["payer"] == "alice"
    assert pipeline(owner).staged == [T1, t2] and owner.size == 1


async def test_a_resubmission_during_the_commit_waits_for_it_and_is_known(store, owner) -> None:
    pipeline(owner).gate.clear()
    first = asyncio.create_task(owner.submit(PARTITION, [T1], wait_s=0))
    await asyncio.sleep(0.01)
    again = asyncio.create_task(owner.submit(PARTITION, [T1], wait_s=0))
    await asyncio.sleep(0.01)
    assert not first.done() and not again.done()
    pipeline(owner).gate.set()
    assert (await first)[0][0] == Verdict.SUBMITTED
    assert (await again)[0] == (Verdict.KNOWN, TxRecord.pending(T1).to_dict())
    assert pipeline(owner).staged == [T1]


async def test_the_same_id_with_another_body_is_a_conflict_before_and_after_the_decision(store, owner) -> None:
    await owner.submit(PARTITION, [T1], wait_s=0)
    other = Transfer("t1", "alice", "bob", 999)
    ((code, body),) = await owner.submit(PARTITION, [other], wait_s=0)
    assert code == Verdict.CONFLICT and body["error"] == "id_conflict" and body["existing"]["amount"] == 100
    store[transaction_key("t1")] = applied(T1).to_row()
    owner.decided(PARTITION, [applied(T1)])
    for tx in (other, Deposit("t1", "alice", 100)):
        ((code, body),) = await owner.submit(PARTITION, [tx], wait_s=0)
        assert code == Verdict.CONFLICT and body["existing"]["status"] == APPLIED
    ((code, body),) = await owner.submit(PARTITION, [T1], wait_s=0)
    assert (code, body) == (Verdict.KNOWN, applied(T1).to_dict())
    assert pipeline(owner).staged == [T1] and owner.size == 0


async def test_a_wait_ends_with_the_decision(store, owner) -> None:
    submitted = asyncio.create_task(owner.submit(PARTITION, [T1], wait_s=5))
    await asyncio.sleep(0.01)
    looked_up = asyncio.create_task(owner.lookup(PARTITION, "t1", wait_s=5))
    await asyncio.sleep(0.01)
    assert not submitted.done() and not looked_up.done()
    owner.decided(PARTITION, [applied(T1)])
    assert await submitted == [(Verdict.KNOWN, applied(T1).to_dict())]
    assert await looked_up == applied(T1).to_dict()


async def test_a_lookup_during_the_commit_answers_as_the_commit_does(store, owner) -> None:
    """Not `pending` before the commit ends: a batch a fence drops was never there, and the next owner answers."""
    for fenced in (False, True):
        tx = Transfer(f"t-{fenced}", "alice", "bob", 1)
        pipeline(owner).gate.clear()
        pipeline(owner).fenced = fenced
        pipeline(owner).decide[tx.id] = applied(tx)
        submitted = asyncio.create_task(owner.submit(PARTITION, [tx], wait_s=0))
        await asyncio.sleep(0.01)
        looked_up = asyncio.create_task(owner.lookup(PARTITION, tx.id, wait_s=0))
        await asyncio.sleep(0.01)
        assert not looked_up.done()
        if not fenced:
            store[transaction_key(tx.id)] = applied(tx).to_row()  # the commit's checkpoint, before its report
        pipeline(owner).gate.set()
        if fenced:
            for answer in (submitted, looked_up):
                with pytest.raises(NotOwner, match="before"):
                    await answer
        else:
            assert (await submitted)[0] == (Verdict.SUBMITTED, applied(tx).to_dict())
            assert await looked_up == applied(tx).to_dict()


async def test_a_wait_ends_at_its_deadline_with_pending(store, owner) -> None:
    ((code, body),) = await owner.submit(PARTITION, [T1], wait_s=0.05)
    assert code == Verdict.SUBMITTED and body["status"] == "pending"
    assert (await owner.lookup(PARTITION, "t1", wait_s=0.05))["status"] == "pending"
    assert await owner.lookup(PARTITION, "unknown", wait_s=0.05) is None


async def test_a_partition_that_leaves_ends_its_waits_and_forgets_them(store, owner) -> None:
    waiting = asyncio.create_task(owner.submit(PARTITION, [T1], wait_s=5))
    await asyncio.sleep(0.01)
    owner.release({PARTITION})
    assert (await waiting)[0][1]["status"] == "pending" and owner.size == 0


async def test_past_the_backlog_bound_nothing_is_staged(store, owner) -> None:
    owner.max_waiting = 1
    await owner.submit(PARTITION, [T1], wait_s=0)
    with pytest.raises(Backlogged):
        await owner.submit(PARTITION, [Transfer("t2", "alice", "bob", 1)], wait_s=0)
    assert pipeline(owner).staged == [T1]


async def test_a_batch_dropped_by_a_fence_is_forgotten_and_the_request_goes_to_the_next_owner(store, owner) -> None:
    pipeline(owner).fenced = True
    with pytest.raises(NotOwner, match="before its commit"):
        await owner.submit(PARTITION, [T1], wait_s=0)
    assert owner.size == 0
    pipeline(owner).fenced = False
    assert (await owner.submit(PARTITION, [T1], wait_s=0))[0][0] == Verdict.SUBMITTED and owner.size == 1


async def test_a_partition_not_open_here_is_looked_up_elsewhere(store, owner) -> None:
    with pytest.raises(NotOwner, match="not open"):
        await owner.submit(PARTITION + 1, [T1], wait_s=0)
    assert owner.size == 0 and pipeline(owner).staged == []


async def test_while_a_commit_is_stalled_new_transactions_are_refused_and_known_ones_answered(store, owner) -> None:
    """Two of three Kafka nodes down: the commit under way waits for replicas that are not there. A new transaction
    is refused at once (a 503 for the client) instead of waiting behind it; an id already known is still told so."""
    store[transaction_key("t1")] = applied(T1).to_row()
    pipeline(owner).running_s = STALLED_COMMIT_S + 1
    with pytest.raises(Unavailable, match="have not finished"):
        await owner.submit(PARTITION, [Transfer("t2", "alice", "bob", 5)], wait_s=0)
    assert await owner.submit(PARTITION, [T1], wait_s=0) == [(Verdict.KNOWN, applied(T1).to_dict())]
    assert pipeline(owner).staged == [] and owner.size == 0
    pipeline(owner).running_s = STALLED_COMMIT_S - 1
    ((code, _),) = await owner.submit(PARTITION, [Transfer("t2", "alice", "bob", 5)], wait_s=0)
    assert code == Verdict.SUBMITTED
