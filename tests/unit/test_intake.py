"""The owner's side of a submission, with its store and the broker replaced by dicts: conflicts, resubmissions,
waits for a decision, the backlog bound, and partitions that leave."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from payments_app import intake
from payments_app.domain.commands import Command, Deposit, Transfer
from payments_app.domain.ledger import APPLIED, TxRecord, transaction_key
from payments_app.intake import ACCEPTED, CONFLICT, KNOWN, Backlogged, Intake

PARTITION = 3
T1 = Transfer("t1", "alice", "bob", 100)


class FakeBroker:
    def __init__(self) -> None:
        self.sent: list[Command] = []
        self.fail = False

    async def submit(self, by_partition: dict[int, list[Command]]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.extend(by_partition[PARTITION])


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {}
    monkeypatch.setattr(intake, "stored_value", lambda partition, key: rows.get(key))
    return rows


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    fake = FakeBroker()
    monkeypatch.setattr(intake, "SUBMISSIONS", fake)
    return fake


def applied(tx: Transfer) -> TxRecord:
    return TxRecord(tx.id, "transfer", APPLIED, None, {"payer": tx.payer, "payee": tx.payee, "amount": tx.amount})


async def test_a_new_transaction_is_sent_and_a_resubmission_is_known_before_it_is_applied(store, broker) -> None:
    owner = Intake()
    ((code, body),) = await owner.submit(PARTITION, [T1], wait_s=0)
    assert code == ACCEPTED and body["status"] == "pending" and body["payer"] == "alice"
    ((code, body),) = await owner.submit(PARTITION, [T1], wait_s=0)
    assert code == KNOWN and body["status"] == "pending"
    assert broker.sent == [T1] and owner.size == 1


async def test_the_same_id_with_another_body_is_a_conflict_before_and_after_the_decision(store, broker) -> None:
    owner = Intake()
    await owner.submit(PARTITION, [T1], wait_s=0)
    other = Transfer("t1", "alice", "bob", 999)
    ((code, body),) = await owner.submit(PARTITION, [other], wait_s=0)
    assert code == CONFLICT and body["error"] == "id_conflict" and body["existing"]["amount"] == 100
    store[transaction_key("t1")] = applied(T1).to_row()
    owner.decided(PARTITION, [applied(T1)])
    for tx in (other, Deposit("t1", "alice", 100)):
        ((code, body),) = await owner.submit(PARTITION, [tx], wait_s=0)
        assert code == CONFLICT and body["existing"]["status"] == APPLIED
    ((code, body),) = await owner.submit(PARTITION, [T1], wait_s=0)
    assert (code, body) == (KNOWN, applied(T1).to_dict())
    assert broker.sent == [T1] and owner.size == 0


async def test_a_wait_ends_with_the_decision(store, broker) -> None:
    owner = Intake()
    submitted = asyncio.create_task(owner.submit(PARTITION, [T1], wait_s=5))
    looked_up = asyncio.create_task(owner.lookup(PARTITION, "t1", wait_s=5))
    await asyncio.sleep(0.01)
    assert not submitted.done() and not looked_up.done()
    owner.decided(PARTITION, [applied(T1)])
    assert await submitted == [(KNOWN, applied(T1).to_dict())]
    assert await looked_up == applied(T1).to_dict()


async def test_a_wait_ends_at_its_deadline_with_pending(store, broker) -> None:
    owner = Intake()
    ((code, body),) = await owner.submit(PARTITION, [T1], wait_s=0.05)
    assert code == ACCEPTED and body["status"] == "pending"
    assert (await owner.lookup(PARTITION, "t1", wait_s=0.05))["status"] == "pending"
    assert await owner.lookup(PARTITION, "unknown", wait_s=0.05) is None


async def test_a_partition_that_leaves_ends_its_waits_and_forgets_them(store, broker) -> None:
    owner = Intake()
    waiting = asyncio.create_task(owner.submit(PARTITION, [T1], wait_s=5))
    await asyncio.sleep(0.01)
    owner.release({PARTITION})
    assert (await waiting)[0][1]["status"] == "pending" and owner.size == 0


async def test_past_the_backlog_bound_nothing_is_sent(store, broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "MAX_WAITING", 1)
    owner = Intake()
    await owner.submit(PARTITION, [T1], wait_s=0)
    with pytest.raises(Backlogged):
        await owner.submit(PARTITION, [Transfer("t2", "alice", "bob", 1)], wait_s=0)
    assert broker.sent == [T1]


async def test_a_send_that_fails_forgets_its_transactions(store, broker) -> None:
    owner = Intake()
    broker.fail = True
    with pytest.raises(ConnectionError):
        await owner.submit(PARTITION, [T1], wait_s=0)
    broker.fail = False
    assert (await owner.submit(PARTITION, [T1], wait_s=0))[0][0] == ACCEPTED and owner.size == 1
