"""The money rules on the in-memory cluster: Concurrent-model examples first, then hypothesis for both models."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from payments_app.domain.commands import ClientTransaction, Deposit, Transfer, Withdrawal
from payments_app.domain.ledger import (
    APPLIED,
    INSUFFICIENT_FUNDS,
    MAX_PARKED_PER_SEGMENT,
    REJECTED,
    SAME_ACCOUNT,
    UNKNOWN_ACCOUNT,
)
from payments_app.domain.routing import CONCURRENT, MODELS
from payments_app.runtime.commit import GroupResult, Pipeline
from tables.codec import decode_entry, encode_entry, pack_entries, store_entries
from tests.unit.simulation import SimCluster


def funded(partitions: int, accounts: dict[str, int], spread: bool = True) -> SimCluster:
    """A cluster whose accounts hold the given amounts, spread over all segments (or all in segment 0)."""
    cluster = SimCluster(partitions)
    for account in accounts:
        cluster.open(account)
    for account, amount in accounts.items():
        parts = partitions if spread else 1
        for p in range(parts):
            share = amount // parts + (1 if p < amount % parts else 0)
            if share:
                cluster.submit(Deposit(f"fund-{account}-{p}", account, share), partition=p)
    cluster.run()
    return cluster


def test_deposit_then_transfer_within_one_segment() -> None:
    cluster = funded(1, {"alice": 100, "bob": 0})
    cluster.submit(Transfer("t1", "alice", "bob", 30))
    cluster.run()
    assert cluster.status("t1").status == APPLIED
    assert (cluster.balance("alice"), cluster.balance("bob")) == (70, 30)
    assert cluster.audit().ok


def test_sequential_payer_spends_whole_balance_spread_over_eight_segments() -> None:
    cluster = funded(8, {"alice": 100, "bob": 0})
    assert all(s.balance in (12, 13) for s in cluster.segments("alice"))
    cluster.submit(Transfer("t-all", "alice", "bob", 100))
    cluster.run()
    assert cluster.status("t-all").status == APPLIED
    assert (cluster.balance("alice"), cluster.balance("bob")) == (0, 100)
    report = cluster.audit()
    assert report.ok, report.problems
    assert report.in_flight == 0


def test_overdraft_is_rejected_and_changes_nothing() -> None:
    cluster = funded(4, {"alice": 100, "bob": 5})
    cluster.submit(Transfer("t-over", "alice", "bob", 101))
    cluster.run()
    record = cluster.status("t-over")
    assert (record.status, record.reason) == (REJECTED, INSUFFICIENT_FUNDS)
    assert (cluster.balance("alice"), cluster.balance("bob")) == (100, 5)
    assert cluster.audit().ok


def test_an_overdraft_spread_over_eight_segments_is_refused_without_moving_money() -> None:
    """The round asks for offers first: the whole account cannot cover 101, so no segment gives anything."""
    cluster = funded(8, {"alice": 100, "bob": 0})
    before = [s.balance for s in cluster.segments("alice")]
    cluster.submit(Transfer("t-over", "alice", "bob", 101), partition=3)
    cluster.run()
    assert (cluster.status("t-over").status, cluster.status("t-over").reason) == (REJECTED, INSUFFICIENT_FUNDS)
    assert [s.balance for s in cluster.segments("alice")] == before
    assert all(s.moved_in == s.moved_out == 0 for s in cluster.segments("alice"))
    assert all(s.round is None and not s.parked for s in cluster.segments("alice"))
    assert cluster.audit().ok


def test_a_collection_moves_only_the_shortfall_from_the_largest_offers() -> None:
    """Segment 0 holds 10 and pays 25: 15 more are needed, and only 15 move, from the segment offering most."""
    cluster = funded(4, {"alice": 0, "bob": 0})
    for p, amount in enumerate((10, 5, 40, 20)):
        cluster.submit(Deposit(f"d{p}", "alice", amount), partition=p)
    cluster.submit(Transfer("t-25", "alice", "bob", 25), partition=0)
    cluster.run()
    assert cluster.status("t-25").status == APPLIED
    segments = cluster.segments("alice")
    assert [s.balance for s in segments] == [0, 5, 25, 20]
    assert [(s.moved_in, s.moved_out) for s in segments] == [(15, 0), (0, 0), (0, 15), (0, 0)]
    assert cluster.audit().ok and cluster.audit().in_flight == 0


def test_a_round_refuses_what_it_cannot_cover_and_pays_what_it_can_in_order() -> None:
    """Three debits wait in one round; the account holds 60: the first (30) and third (20) are paid, the second
    (50) is refused, and only what the paid ones lack moves."""
    cluster = funded(2, {"alice": 0, "bob": 0})
    cluster.submit(Deposit("d0", "alice", 10), partition=0)
    cluster.submit(Deposit("d1", "alice", 50), partition=1)
    for tx_id, amount in (("w-30", 30), ("w-50", 50), ("w-20", 20)):
        cluster.submit(Withdrawal(tx_id, "alice", amount), partition=0)
    cluster.run()
    assert [cluster.status(t).status for t in ("w-30", "w-50", "w-20")] == [APPLIED, REJECTED, APPLIED]
    assert cluster.balance("alice") == 10
    assert [(s.moved_in, s.moved_out) for s in cluster.segments("alice")] == [(40, 0), (0, 40)]
    assert cluster.audit().ok


def test_unknown_accounts_and_self_transfer_are_rejected() -> None:
    cluster = funded(2, {"alice": 10})
    cluster.submit(Deposit("d-x", "nobody", 5))
    cluster.submit(Transfer("t-x", "alice", "nobody", 5))
    cluster.submit(Transfer("t-self", "alice", "alice", 5))
    cluster.run()
    assert cluster.status("d-x").reason == UNKNOWN_ACCOUNT
    assert cluster.status("t-x").reason == UNKNOWN_ACCOUNT
    assert cluster.status("t-self").reason == SAME_ACCOUNT
    assert cluster.balance("alice") == 10
    assert cluster.audit().deposits == 10


def test_duplicate_id_is_applied_once() -> None:
    cluster = funded(4, {"alice": 100, "bob": 0})
    for _ in range(3):
        cluster.submit(Transfer("t-dup", "alice", "bob", 10))
    cluster.submit(Transfer("t-dup", "alice", "bob", 50))
    cluster.run()
    assert cluster.balance("bob") == 10
    assert cluster.audit().ok


def test_withdrawal_collects_from_other_segments() -> None:
    cluster = funded(3, {"alice": 90}, spread=True)
    cluster.submit(Withdrawal("w1", "alice", 80))
    cluster.run()
    assert cluster.status("w1").status == APPLIED
    assert cluster.balance("alice") == 10
    report = cluster.audit()
    assert report.ok and report.withdrawals == 80


def test_a_crash_before_or_after_the_commit_replays_to_the_same_result() -> None:
    cluster = funded(4, {"alice": 100, "bob": 0})
    cluster.submit(Transfer("t1", "alice", "bob", 90))
    p = next(iter(cluster.pending()))
    cluster.step_group(p, 1, crash="before_commit")
    assert cluster.status("t1") is None
    cluster.step_group(p, 1, crash="before_checkpoint")
    cluster.run()
    assert cluster.status("t1").status == APPLIED
    assert (cluster.balance("alice"), cluster.balance("bob")) == (10, 90)
    assert cluster.audit().ok
    assert cluster.stores_match_changelogs()


def test_a_fenced_owner_commits_nothing() -> None:
    """A worker paused past its session timeout resumes with a staged group: the new owner has fenced it."""
    cluster = funded(2, {"alice": 100, "bob": 0})
    cluster.submit(Transfer("t1", "alice", "bob", 10), partition=0)
    assert cluster.zombie_commit(0, 1)
    assert cluster.status("t1") is None
    cluster.run()
    assert cluster.status("t1").status == APPLIED
    assert cluster.balance("bob") == 10


def three_transfers_in_partition_0() -> SimCluster:
    cluster = funded(2, {"alice": 100, "bob": 0})
    for n in range(3):
        cluster.submit(Transfer(f"t{n}", "alice", "bob", 10 + n), partition=0)
    return cluster


def assert_three_transfers_applied(cluster: SimCluster) -> None:
    assert [cluster.status(f"t{n}").status for n in range(3)] == [APPLIED] * 3
    assert cluster.balance("bob") == 33


def test_records_committed_past_but_never_applied_are_applied_when_a_session_opens() -> None:
    cluster = three_transfers_in_partition_0()
    cluster.skip(0, 3)
    cluster.session(0)
    assert_three_transfers_applied(cluster)


def test_records_a_new_consumer_dropped_are_read_before_the_first_one_it_delivers() -> None:
    cluster = three_transfers_in_partition_0()
    cluster.lose_first(0, 2)
    assert_three_transfers_applied(cluster)


def test_the_audit_catches_invented_money() -> None:
    cluster = funded(2, {"alice": 10})
    key = b"0/s/alice"
    entry = decode_entry(cluster.stored(0)[key])
    entry[0] += 1  # the balance
    cluster.parts[0].changelog.append((key, encode_entry(entry)))
    report = cluster.audit()
    assert not report.ok
    assert any("not conserved" in problem for problem in report.problems)


def test_a_changelog_with_segments_in_the_older_dict_form_restores_and_takes_new_transfers() -> None:
    """An upgrade from stored-format version 1 (`tables.codec.STORED_FORMAT`): every segment written before it is a
    dict in the changelog and the stores."""
    cluster = funded(2, {"alice": 10, "bob": 0})
    rewritten = 0
    for part in cluster.parts:
        for offset, (record_key, packed) in enumerate(part.changelog):
            entries = store_entries(record_key, packed)
            for index, (key, raw) in enumerate(entries):
                if b"/s/" in key:
                    balance, moved_in, moved_out, *extras = decode_entry(raw)
                    old = {
                        "balance": balance,
                        "moved_in": moved_in,
                        "moved_out": moved_out,
                        **(extras[0] if extras else {}),
                    }
                    entries[index] = (key, encode_entry(old))
                    rewritten += 1
            part.changelog[offset] = (record_key, pack_entries(entries))
    assert rewritten >= 4  # alice's and bob's segment in each partition
    for p in range(2):
        cluster.take_over(p)  # an empty store: restored from that changelog
    cluster.submit(Transfer("after-upgrade", "alice", "bob", 7))
    cluster.run()
    assert cluster.status("after-upgrade").status == APPLIED
    assert (cluster.balance("alice"), cluster.balance("bob")) == (3, 7)
    assert cluster.audit().ok and cluster.stores_match_changelogs()


ACCOUNTS = ["a", "b", "c", "d"]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), st.sampled_from(ACCOUNTS), st.integers(1, 50)),
        st.tuples(st.just("withdraw"), st.sampled_from(ACCOUNTS), st.integers(1, 80)),
        st.tuples(st.just("transfer"), st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS), st.integers(1, 80)),
    ),
    min_size=1,
    max_size=40,
)


def expected_balances(cluster: SimCluster, ops: list[tuple], ids: list[str]) -> dict[str, int]:
    balances = dict.fromkeys(ACCOUNTS, 0)
    for op, tx_id in zip(ops, ids, strict=True):
        record = cluster.status(tx_id)
        assert record is not None and record.status in (APPLIED, REJECTED), (tx_id, record)
        if record.status != APPLIED:
            continue
        if op[0] == "deposit":
            balances[op[1]] += op[2]
        elif op[0] == "withdraw":
            balances[op[1]] -= op[2]
        else:
            balances[op[1]] -= op[3]
            balances[op[2]] += op[3]
    return balances


@settings(max_examples=300, deadline=None)
@given(
    ops=operations,
    partitions=st.integers(1, 5),
    seed=st.integers(0, 2**32),
    fault_rate=st.sampled_from([0.0, 0.2]),
    model=st.sampled_from(MODELS),
)
def test_any_interleaving_and_crashes_conserve_money_and_decide_everything(
    ops: list[tuple], partitions: int, seed: int, fault_rate: float, model: str
) -> None:
    cluster = SimCluster(partitions, model)
    for account in ACCOUNTS:
        cluster.open(account)
    cluster.run()
    rng = random.Random(seed)
    ids = []
    for n, op in enumerate(ops):
        tx_id = f"tx-{n}"
        ids.append(tx_id)
        tx: ClientTransaction
        if op[0] == "deposit":
            tx = Deposit(tx_id, op[1], op[2])
        elif op[0] == "withdraw":
            tx = Withdrawal(tx_id, op[1], op[2])
        else:
            tx = Transfer(tx_id, op[1], op[2], op[3])
        cluster.submit_as_a_client(tx, rng, fault_rate)
        if model == CONCURRENT and rng.random() < 0.2:
            cluster.rebalance(rng.choice(ACCOUNTS))
        if rng.random() < 0.3:
            cluster.run(rng, fault_rate)
    cluster.run(rng, fault_rate)
    report = cluster.audit()
    assert report.ok, report.problems
    assert report.in_flight == 0
    assert all(s.balance >= 0 for a in ACCOUNTS for s in cluster.segments(a))
    expected = expected_balances(cluster, ops, ids)
    assert {a: cluster.balance(a) for a in ACCOUNTS} == expected
    assert sum(cluster.meta(p).decided for p in range(partitions)) == len(ids)  # each decided once, none lost
    assert cluster.stores_match_changelogs()


@settings(max_examples=100, deadline=None)
@given(amounts=st.lists(st.integers(0, 40), min_size=2, max_size=8), seed=st.integers(0, 2**32))
def test_a_sequential_payer_is_never_wrongly_rejected(amounts: list[int], seed: int) -> None:
    """Funds anywhere in the account cover a payment made when no other payment of the payer is pending."""
    partitions = len(amounts)
    cluster = SimCluster(partitions)
    cluster.open("payer")
    cluster.open("payee")
    for p, amount in enumerate(amounts):
        if amount:
            cluster.submit(Deposit(f"f{p}", "payer", amount), partition=p)
    cluster.run()
    total = sum(amounts)
    rng = random.Random(seed)
    n = 0
    while total > 0:
        amount = rng.randint(1, total)
        cluster.submit(Transfer(f"pay{n}", "payer", "payee", amount))
        cluster.run(rng)
        assert cluster.status(f"pay{n}").status == APPLIED
        total -= amount
        n += 1
    assert cluster.balance("payer") == 0 and cluster.balance("payee") == sum(amounts)


def test_a_record_replayed_after_later_ones_were_applied_is_skipped() -> None:
    """The committed offset can lag the changelog: replaying an old record must change nothing."""
    cluster = funded(2, {"alice": 100, "bob": 0})
    cluster.submit(Transfer("t1", "alice", "bob", 10), partition=0)
    cluster.submit(Transfer("t2", "alice", "bob", 20), partition=0)
    cluster.run()
    before = list(cluster.parts[0].changelog)
    cluster.rewind(0, 2)
    cluster.step_group(0, 2)
    assert cluster.parts[0].changelog == before
    assert cluster.balance("bob") == 30


def test_a_segment_queues_a_bounded_number_of_waiting_debits() -> None:
    cluster = funded(2, {"alice": 0, "bob": 0})
    for n in range(MAX_PARKED_PER_SEGMENT + 5):
        cluster.submit(Withdrawal(f"w{n}", "alice", 1), partition=0)
    cluster.submit(Deposit("d", "alice", 1), partition=1)
    for _ in range(MAX_PARKED_PER_SEGMENT + 5):
        cluster.step(0)
    segment = cluster.segments("alice")[0]
    assert len(segment.parked) == MAX_PARKED_PER_SEGMENT
    cluster.run()
    assert cluster.audit().ok


def test_commits_are_spaced_so_records_arriving_meanwhile_share_one() -> None:
    """Records of one partition arriving 2 ms apart: with no spacing each commits alone (a Kafka transaction
    each); with 500 ms per partition, the first commits at once and those arriving meanwhile share the next commit
    (which the drain starts at once)."""

    def commits(spacing_s: float) -> int:
        cluster = funded(1, {"alice": 100, "bob": 0})
        for n in range(10):
            cluster.submit(Transfer(f"t{n}", "alice", "bob", 1))
        session, log = cluster.session(0), cluster.parts[0].log
        results: list[GroupResult] = []

        async def feed() -> None:
            pipeline = Pipeline(1, CONCURRENT, results.append, lambda exc: None, 100, spacing_s=spacing_s)
            for offset in range(cluster.applied(0) + 1, len(log)):
                await pipeline.add(session, offset, log[offset], time.time())
                await asyncio.sleep(0.002)
            await pipeline.drain()

        asyncio.run(feed())
        assert (cluster.balance("alice"), cluster.balance("bob")) == (90, 10) and cluster.audit().ok
        return len(results)

    assert commits(0.0) == 10
    assert 2 <= commits(0.5) <= 3  # 3 only if the ten records took longer than the interval to arrive


def test_each_record_is_timed_from_its_timestamp_to_its_commit_and_a_fenced_group_is_not() -> None:
    """`payments_record_committed_seconds` observes every delivered record once its group commits, as the time
    since the record's timestamp; a group a new owner fenced committed nothing and is not timed."""

    def observed() -> tuple[float, float]:
        name = "payments_record_committed_seconds"
        return REGISTRY.get_sample_value(f"{name}_count") or 0.0, REGISTRY.get_sample_value(f"{name}_sum") or 0.0

    cluster = funded(1, {"alice": 100, "bob": 0})
    log = cluster.parts[0].log

    async def feed(session: Any, offsets: range) -> list[GroupResult]:
        results: list[GroupResult] = []
        pipeline = Pipeline(1, CONCURRENT, results.append, lambda exc: None, 2)
        for offset in offsets:
            await pipeline.add(session, offset, log[offset], time.time() - 1.5)
        await pipeline.drain()
        return results

    for n in range(5):
        cluster.submit(Transfer(f"t{n}", "alice", "bob", 1))
    session = cluster.session(0)
    count, total = observed()
    results = asyncio.run(feed(session, range(cluster.applied(0) + 1, len(log))))
    assert len(results) >= 2 and not any(result.fenced for result in results)
    assert observed()[0] == count + 5 and 5 * 1.5 <= observed()[1] - total < 5 * 1.5 + 5
    for n in range(5, 8):
        cluster.submit(Transfer(f"t{n}", "alice", "bob", 1))
    cluster.parts[0].session = None
    cluster.session(0)  # a new owner opens the partition, fencing the first
    timed = observed()
    results = asyncio.run(feed(session, range(len(log) - 3, len(log))))
    assert results and all(result.fenced for result in results) and observed() == timed


def test_submissions_at_the_owner_share_a_commit_bounded_by_commands_not_records() -> None:
    """Client batches staged at the owner (an array of 50 is one per partition it spans) fill a group up to its
    bound on commands: a bound of 2 records would have cut these 8 batches into several commits."""
    cluster = funded(1, {"alice": 100, "bob": 0})
    session = cluster.session(0)
    results: list[GroupResult] = []

    async def submit_all() -> list[GroupResult]:
        pipeline = Pipeline(1, CONCURRENT, results.append, lambda exc: None, max_records=2, spacing_s=0.5)
        batches = [[Transfer(f"s{n}", "alice", "bob", 1)] for n in range(8)]
        return await asyncio.gather(*(pipeline.add_submitted(session, batch) for batch in batches))

    answers = asyncio.run(submit_all())
    assert all(0 in answer.committed for answer in answers)
    assert len(results) == 2  # the first commits at once; the other seven, arriving meanwhile, share the next
    assert (cluster.balance("alice"), cluster.balance("bob")) == (92, 8) and cluster.audit().ok
