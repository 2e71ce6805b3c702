"""Partitions handed between workers, through the runtime's own opening (restore, fence, catch-up, handing) and
pipeline, under crashes, pauses past the session timeout and rebalances, explored by hypothesis: afterwards every
accepted transaction is decided exactly once, money is conserved, and every owner's store is its changelog."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import ConsumerStoppedError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments_app.domain.commands import ClientTransaction, Deposit, OpenAccount, Transfer, Withdrawal
from payments_app.domain.ledger import APPLIED
from payments_app.runtime.ledger_writer import ProducerReplaced
from tables.codec import encode_batch
from tests.unit.handover_sim import HandoverSim, SimReader

PARTITIONS, WORKERS = 3, 3
ACCOUNTS = ("alice", "bob", "carol")
OPENING = 100

workers = st.integers(0, WORKERS - 1)
partitions = st.integers(0, PARTITIONS - 1)
accounts = st.sampled_from(ACCOUNTS)
amounts = st.integers(1, 60)
transactions = st.one_of(
    st.tuples(st.just("deposit"), accounts, amounts),
    st.tuples(st.just("withdraw"), accounts, amounts),
    st.tuples(st.just("transfer"), accounts, accounts, amounts),
)
submissions = st.one_of(st.tuples(st.just("log"), transactions), st.tuples(st.just("direct"), workers, transactions))
operations = st.one_of(
    submissions,
    submissions,
    st.tuples(st.just("consume"), workers, partitions, st.integers(1, 4)),
    st.tuples(st.just("consume"), workers, partitions, st.integers(1, 4)),
    st.tuples(st.just("rebalance"), st.lists(st.integers(0, WORKERS - 1), min_size=PARTITIONS, max_size=PARTITIONS)),
    st.tuples(st.just("rewind"), workers, partitions, st.integers(1, 3)),
    st.tuples(st.just("time_out"), workers),
    st.tuples(st.just("commit_consumed"), workers),
    st.tuples(st.just("crash"), workers),
    st.tuples(st.just("pause"), workers),
    st.tuples(st.just("resume"), workers),
)


def transaction(n: int, spec: tuple[Any, ...]) -> ClientTransaction:
    tx_id = f"tx-{n}"
    if spec[0] == "deposit":
        return Deposit(tx_id, spec[1], spec[2])
    if spec[0] == "withdraw":
        return Withdrawal(tx_id, spec[1], spec[2])
    return Transfer(tx_id, spec[1], spec[2], spec[3])


def opened_cluster() -> HandoverSim:
    sim = HandoverSim(PARTITIONS, WORKERS)
    for account in ACCOUNTS:
        for log in sim.broker.logs:
            log.append(encode_batch([OpenAccount(account, "test")]))
    for n, account in enumerate(ACCOUNTS):
        sim.log_submit(Deposit(f"fund-{n}", account, OPENING))
    sim.rebalance()
    return sim


def run(sim: HandoverSim, ops: list[tuple[Any, ...]]) -> None:
    for n, op in enumerate(ops):
        kind = op[0]
        if kind == "log":
            sim.log_submit(transaction(n, op[1]))
        elif kind == "direct":
            sim.direct_submit(op[1], transaction(n, op[2]))
        elif kind == "consume":
            sim.consume(op[1], op[2], op[3])
        elif kind == "rewind":
            sim.rewind(op[1], op[2], op[3])
        elif kind == "rebalance":
            sim.rebalance(op[1])
        else:
            getattr(sim, kind)(op[1])


def expected_balances(sim: HandoverSim) -> dict[str, int]:
    """What the applied transactions make each balance, each counted once."""
    balances = dict.fromkeys(ACCOUNTS, 0)
    for tx in sim.accepted.values():
        record = sim.status(tx.id)
        assert record is not None and record.decided, (tx, record)
        if record.status != APPLIED:
            continue
        if isinstance(tx, Transfer):
            balances[tx.payer] -= tx.amount
            balances[tx.payee] += tx.amount
        else:
            balances[tx.account] += tx.amount if isinstance(tx, Deposit) else -tx.amount
    return balances


def check(sim: HandoverSim) -> None:
    try:
        sim.settle()
        unexpected = [exc for exc in sim.failures() if not isinstance(exc, ProducerReplaced)]
        assert not unexpected, unexpected
        report = sim.audit()
        assert report.ok, report.problems
        assert {account: sim.balance(account) for account in ACCOUNTS} == expected_balances(sim)
        assert sim.stores_match_changelogs()
    finally:
        sim.close()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, max_size=40), st.integers(0, 12))
def test_every_accepted_transaction_is_decided_once_through_hand_overs_crashes_and_pauses(ops, latency) -> None:
    sim = opened_cluster()
    sim.broker.latency = latency
    run(sim, ops)
    check(sim)


def test_a_paused_owner_that_comes_back_commits_nothing_the_new_owner_did_not_decide() -> None:
    sim = opened_cluster()
    run(sim, [("log", ("deposit", "alice", 50))])
    sim.settle()
    sim.pause(0)  # its partitions move to the others
    for n in range(6):
        sim.log_submit(Transfer(f"p-{n}", "alice", "bob", 5))
    sim.workers[0].paused = False  # it runs on its stale sessions before it hears of the rebalance
    stale = list(sim.workers[0].positions)
    assert stale, "the paused worker owned partitions before its pause"
    for partition in stale:
        sim.consume(0, partition, 10)
    assert set(sim.workers[0].fenced) == set(stale)  # its groups there were refused: the group had moved on
    sim.rebalance()  # its return to the group
    check(sim)
    assert [sim.status(f"p-{n}").status for n in range(6)] == [APPLIED] * 6


def test_a_crash_between_staging_and_committing_loses_nothing_the_client_was_told_of() -> None:
    sim = opened_cluster()
    sim.log_submit(Deposit("d", "alice", 100))
    sim.settle()
    for n in range(4):
        sim.direct_submit(n % WORKERS, Transfer(f"c-{n}", "alice", "bob", 10))
    owner = next(w for w, worker in enumerate(sim.workers) if worker.positions)
    sim.consume(owner, next(iter(sim.workers[owner].positions)), 1)
    sim.crash(owner)
    check(sim)


def test_a_session_revoked_while_its_catch_up_commits_leaves_the_store_to_its_successor() -> None:
    """The producer is fenced mid-commit, the partition reopens and catches up; a rebalance revokes it while that
    catch-up commit is on its way back, and the successor restores past it first."""
    sim = opened_cluster()
    sim.broker.latency = 8
    run(sim, [("time_out", 0), ("consume", 0, 0, 1), ("rebalance", [0, 1, 2])])
    check(sim)


def test_a_session_fenced_while_it_opens_opens_again_by_itself() -> None:
    """Faust committed the records its agent moved past; the producer is fenced during the agent's commit and again
    during the reopened session's catch-up: the partition must open once more, with no new record to prompt it."""
    sim = HandoverSim(1, 1)
    for account in ACCOUNTS:
        sim.broker.logs[0].append(encode_batch([OpenAccount(account, "test")]))
    sim.log_submit(Deposit("fund", "alice", OPENING))
    sim.rebalance()
    sim.broker.latency = 40  # a commit takes several operations' turns
    sim.consume(0, 0, 4)
    sim.commit_consumed(0)
    sim.time_out(0)
    while not sim.workers[0].fenced:  # the agent's commit is refused; the partition reopens and catches up
        sim.consume(0, 0, 0)
    sim.time_out(0)  # during that catch-up's commit
    check(sim)
    assert len(sim.workers[0].fenced) >= 2  # the agent's group, and the catch-up's
    assert sim.status("fund").status == APPLIED


def test_a_partition_that_fails_to_open_stops_the_worker_unless_it_was_retired_meanwhile() -> None:
    """The failure policy covers the sessions a worker uses. A worker stopping closes its log reader under a
    partition still opening (or a rebalance revokes it): that opening's error concerns nothing, and used to end a
    clean stop with exit code 70."""
    sim = HandoverSim(2, 1)
    worker = sim.workers[0]
    reader = SimReader(sim.broker)
    reading = asyncio.Event()

    async def closed_under_it(*args: Any) -> None:
        await reading.wait()
        raise ConsumerStoppedError()

    reader.read = closed_under_it  # type: ignore[method-assign]
    worker.sessions._reader = reader  # type: ignore[assignment]
    sim.broker.changelogs[0].append((b"0/m", b"{}"))  # something to restore, so the opening reads
    sim.broker.changelogs[1].append((b"1/m", b"{}"))
    sim.rebalance()
    worker.run(asyncio.sleep(0))
    worker.sessions.revoke({0})
    reading.set()
    worker.run(asyncio.sleep(0))
    assert [type(exc) for exc in worker.failures] == [ConsumerStoppedError]  # partition 1's, not the retired 0's
