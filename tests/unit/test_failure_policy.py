"""One failure policy for money: an exception while a group is staged, from a client's submission as from the agent's
records, fails the pipeline before anything of that group is written, and a restarted owner decides the
resubmissions from its committed state."""

from __future__ import annotations

import asyncio

import pytest

from payments_app.domain.checks import InvariantViolation
from payments_app.domain.commands import Transfer
from payments_app.domain.routing import CONCURRENT
from payments_app.runtime import commit
from payments_app.runtime.commit import GroupResult, GroupStatus, Pipeline
from tables.codec import encode_batch
from tests.faults import InjectedFault, halfway_then_raise
from tests.unit.test_ledger import funded

real_process_batch = commit.process_batch
raising_halfway = halfway_then_raise(real_process_batch, lambda commands: True)


TRANSFERS = [Transfer(f"t{n}", "alice", "bob", 10) for n in range(6)]


def test_an_exception_halfway_through_a_submission_writes_nothing_and_stops_the_pipeline(monkeypatch) -> None:
    cluster = funded(1, {"alice": 100, "bob": 0})
    session = cluster.session(0)
    changelog, store = list(cluster.parts[0].changelog), dict(session.store.entries)
    failures: list[BaseException] = []
    committed: list[GroupResult] = []

    async def submit() -> Pipeline:
        pipeline = Pipeline(1, CONCURRENT, committed.append, failures.append)
        waiting = asyncio.ensure_future(pipeline.add_submitted(session, [Transfer("early", "alice", "bob", 1)]))
        await asyncio.sleep(0)  # staged in the open group, whose commit has started
        monkeypatch.setattr(commit, "process_batch", raising_halfway)
        with pytest.raises(InjectedFault):
            await pipeline.add_submitted(session, TRANSFERS)
        with pytest.raises(InjectedFault):  # every later use says why the pipeline stopped
            await pipeline.add_submitted(session, [Transfer("later", "alice", "bob", 1)])
        with pytest.raises(InjectedFault):
            await pipeline.drain()
        await asyncio.gather(waiting, return_exceptions=True)
        return pipeline

    pipeline = asyncio.run(submit())
    assert [type(exc) for exc in failures] == [InjectedFault]  # told once: in a worker, this stops the process
    assert pipeline._open is None and pipeline._previous is not None
    assert cluster.parts[0].changelog[: len(changelog)] == changelog
    written = [value for _, value in cluster.parts[0].changelog[len(changelog) :]]
    written += [value for key, value in session.store.entries.items() if store.get(key) != value]
    for tx_id in [*(tx.id for tx in TRANSFERS), "later"]:
        assert not any(f'"{tx_id}"'.encode() in value for value in written), f"{tx_id} was written"
        assert cluster.status(tx_id) is None
    assert cluster.status("early").status == "applied"  # its group committed before the failure


def test_a_restarted_owner_decides_the_resubmissions_from_its_committed_state(monkeypatch) -> None:
    cluster = funded(1, {"alice": 100, "bob": 0})
    session = cluster.session(0)

    async def fail_once() -> None:
        pipeline = Pipeline(1, CONCURRENT, lambda result: None, lambda exc: None)
        monkeypatch.setattr(commit, "process_batch", raising_halfway)
        with pytest.raises(InjectedFault):
            await pipeline.add_submitted(session, TRANSFERS)
        monkeypatch.setattr(commit, "process_batch", real_process_batch)

    asyncio.run(fail_once())
    cluster.crash(0)  # the worker stopped; its store stays on disk
    for tx in TRANSFERS:
        assert cluster.submit_direct(tx)
    assert [cluster.status(tx.id).status for tx in TRANSFERS] == ["applied"] * 6
    assert (cluster.balance("alice"), cluster.balance("bob")) == (40, 60)
    assert cluster.audit().ok and cluster.stores_match_changelogs()


def test_an_exception_staging_a_record_of_the_log_fails_the_pipeline_the_same_way(monkeypatch) -> None:
    cluster = funded(1, {"alice": 100, "bob": 0})
    session = cluster.session(0)
    cluster.parts[0].log.append(encode_batch(TRANSFERS))
    offset = len(cluster.parts[0].log) - 1
    changelog = list(cluster.parts[0].changelog)
    failures: list[BaseException] = []

    async def add() -> Pipeline:
        pipeline = Pipeline(1, CONCURRENT, lambda result: None, failures.append)
        monkeypatch.setattr(commit, "process_batch", raising_halfway)
        with pytest.raises(InjectedFault):
            await pipeline.add(session, offset, cluster.parts[0].log[offset], 0.0)
        with pytest.raises(InjectedFault):
            await pipeline.drain()
        return pipeline

    asyncio.run(add())
    assert [type(exc) for exc in failures] == [InjectedFault]
    assert cluster.parts[0].changelog == changelog


def test_a_group_goes_one_way_through_its_statuses() -> None:
    cluster = funded(1, {"alice": 100, "bob": 0})
    session = cluster.session(0)
    group = commit.Group(1, CONCURRENT)
    assert group.status is GroupStatus.STAGING
    group.add_submitted(session, [Transfer("s1", "alice", "bob", 5)])
    group.seal()
    assert group.status is GroupStatus.SEALED
    with pytest.raises(InvariantViolation, match="sealed"):
        group.add_submitted(session, [Transfer("s2", "alice", "bob", 5)])
    asyncio.run(group.commit())
    assert group.status is GroupStatus.COMMITTED
    assert cluster.status("s1").status == "applied" and cluster.status("s2") is None
