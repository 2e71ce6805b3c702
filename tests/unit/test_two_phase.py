"""Two-phase transfers on the in-memory cluster: a reservation holds the payer's money in the segment of the
partition that decides it; a post pays the payee all or part of it, a void or an expiry gives it back. Examples
first, then hypothesis for both models, with crashes, replays and segment moves."""

from __future__ import annotations

import random

from hypothesis import event, given, settings
from hypothesis import strategies as st

from payments_app.domain.commands import (
    ClientTransaction,
    Deposit,
    ExpireReserved,
    PostReserved,
    Reserve,
    Transfer,
    VoidReserved,
    Withdrawal,
)
from payments_app.domain.ledger import (
    APPLIED,
    EXPIRED,
    INSUFFICIENT_FUNDS,
    POSTED,
    REJECTED,
    RESERVED,
    VOIDED,
    TxRecord,
    expiry_key,
)
from payments_app.domain.routing import CONCURRENT, MODELS
from tables.ledger import storage_key
from tests.unit.simulation import SimCluster
from tests.unit.test_ledger import funded

AT_MS = 1_700_000_000_000


def reserve(tx_id: str, payer: str, payee: str, amount: int, timeout_s: int = 60) -> Reserve:
    return Reserve(tx_id, payer, payee, amount, timeout_s, AT_MS)


def reserved(cluster: SimCluster, account: str) -> int:
    return sum(s.reserved for s in cluster.segments(account))


def assert_audited(cluster: SimCluster, reserved_total: int) -> None:
    report = cluster.audit()
    assert report.ok, report.problems
    assert report.reserved == reserved_total
    assert cluster.stores_match_changelogs()


def test_a_reservation_holds_the_payers_money_until_it_is_posted_in_full() -> None:
    cluster = funded(4, {"alice": 100, "bob": 0})
    cluster.submit(reserve("r1", "alice", "bob", 30))
    cluster.run()
    assert cluster.status("r1").status == RESERVED
    assert (cluster.balance("alice"), reserved(cluster, "alice"), cluster.balance("bob")) == (70, 30, 0)
    assert_audited(cluster, 30)
    cluster.resolve(PostReserved("r1", None), "r1")
    cluster.run()
    record = cluster.status("r1")
    assert (record.status, record.fields["posted"]) == (POSTED, 30)
    assert (cluster.balance("alice"), reserved(cluster, "alice"), cluster.balance("bob")) == (70, 0, 30)
    assert_audited(cluster, 0)


def test_a_partial_post_pays_the_payee_part_and_gives_the_payer_the_rest() -> None:
    cluster = funded(3, {"alice": 100, "bob": 5})
    cluster.submit(reserve("r1", "alice", "bob", 40))
    cluster.run()
    cluster.resolve(PostReserved("r1", 15), "r1")
    cluster.run()
    assert (cluster.status("r1").status, cluster.status("r1").fields["posted"]) == (POSTED, 15)
    assert (cluster.balance("alice"), cluster.balance("bob")) == (85, 20)
    assert_audited(cluster, 0)


def test_a_void_or_an_expiry_gives_everything_back_and_nothing_resolves_it_twice() -> None:
    cluster = funded(2, {"alice": 100, "bob": 0})
    cluster.submit(reserve("voided", "alice", "bob", 30, timeout_s=60))
    cluster.submit(reserve("expiring", "alice", "bob", 20, timeout_s=1))
    cluster.run()
    cluster.resolve(VoidReserved("voided"), "voided")
    cluster.resolve(ExpireReserved(["expiring"], AT_MS + 999), "expiring")  # not due yet: nothing happens
    cluster.run()
    assert cluster.status("voided").status == VOIDED
    assert cluster.status("expiring").status == RESERVED
    cluster.resolve(ExpireReserved(["expiring", "voided"], AT_MS + 1_000), "expiring")
    cluster.resolve(PostReserved("voided", None), "voided")  # too late: it stays voided
    cluster.run()
    assert (cluster.status("expiring").status, cluster.status("voided").status) == (EXPIRED, VOIDED)
    cluster.resolve(PostReserved("expiring", 5), "expiring")
    cluster.run()
    assert cluster.status("expiring").status == EXPIRED
    assert (cluster.balance("alice"), cluster.balance("bob")) == (100, 0)
    assert_audited(cluster, 0)


def test_a_post_of_more_than_was_reserved_or_of_a_plain_transfer_changes_nothing() -> None:
    cluster = funded(2, {"alice": 100, "bob": 0})
    cluster.submit(reserve("r1", "alice", "bob", 30))
    cluster.submit(Transfer("t1", "alice", "bob", 10))
    cluster.run()
    cluster.resolve(PostReserved("r1", 31), "r1")
    cluster.resolve(PostReserved("t1", None), "t1")
    cluster.resolve(VoidReserved("t1"), "t1")
    cluster.run()
    assert (cluster.status("r1").status, cluster.status("t1").status) == (RESERVED, APPLIED)
    assert (cluster.balance("alice"), cluster.balance("bob")) == (60, 10)
    assert_audited(cluster, 30)


def test_a_reservation_collects_from_other_segments_and_one_the_account_cannot_cover_is_rejected() -> None:
    cluster = funded(8, {"alice": 100, "bob": 0})
    cluster.submit(reserve("too-much", "alice", "bob", 101))
    cluster.run()
    cluster.submit(reserve("all", "alice", "bob", 100))
    cluster.run()
    record = cluster.status("too-much")
    assert (record.status, record.reason) == (REJECTED, INSUFFICIENT_FUNDS)
    assert cluster.status("all").status == RESERVED
    holder = cluster.where("all")
    assert [s.reserved for s in cluster.segments("alice")] == [100 if p == holder else 0 for p in range(8)]
    assert cluster.balance("alice") == 0
    assert_audited(cluster, 100)


def test_the_expiry_entry_lives_exactly_as_long_as_the_reservation_is_reserved() -> None:
    cluster = funded(1, {"alice": 100, "bob": 0})
    cluster.submit(reserve("r1", "alice", "bob", 30, timeout_s=5))
    cluster.run()
    key = storage_key(0, expiry_key(AT_MS + 5_000, "r1"))
    assert cluster.stored(0).get(key) == b"r1"
    assert cluster.parts[0].store.get(key) == b"r1"
    cluster.resolve(VoidReserved("r1"), "r1")
    cluster.run()
    assert key not in cluster.stored(0) and cluster.parts[0].store.get(key) is None


def test_a_resubmitted_reservation_is_the_same_request_whenever_the_api_took_it() -> None:
    record = TxRecord.pending(reserve("r1", "alice", "bob", 30))
    assert record.same_request(Reserve("r1", "alice", "bob", 30, 60, AT_MS + 5_000))
    assert not record.same_request(Reserve("r1", "alice", "bob", 30, 61, AT_MS))
    assert not record.same_request(Transfer("r1", "alice", "bob", 30))


ACCOUNTS = ["a", "b", "c"]
operations = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), st.sampled_from(ACCOUNTS), st.integers(1, 50)),
        st.tuples(st.just("withdraw"), st.sampled_from(ACCOUNTS), st.integers(1, 60)),
        st.tuples(st.just("transfer"), st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS), st.integers(1, 60)),
        st.tuples(st.just("reserve"), st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS), st.integers(1, 60)),
        st.tuples(st.just("post"), st.integers(0, 39), st.integers(0, 5)),  # how much: see `post_amount`
        st.tuples(st.just("void"), st.integers(0, 39)),
        st.tuples(st.just("expire"), st.integers(0, 39), st.integers(0, 3)),
    ),
    min_size=1,
    max_size=40,
)


def client_transaction(tx_id: str, op: tuple) -> ClientTransaction:
    if op[0] == "deposit":
        return Deposit(tx_id, op[1], op[2])
    if op[0] == "withdraw":
        return Withdrawal(tx_id, op[1], op[2])
    if op[0] == "transfer":
        return Transfer(tx_id, op[1], op[2], op[3])
    return Reserve(tx_id, op[1], op[2], op[3], 2, AT_MS)


def post_amount(record: TxRecord | None, choice: int) -> int | None:
    """0: all of it (no amount); 1-4: that many quarters of it, at least 1; 5: one more than was reserved."""
    amount = 1 if record is None else record.fields["amount"]
    return None if choice == 0 else amount + 1 if choice == 5 else max(1, amount * choice // 4)


def expected_balances(cluster: SimCluster, ops: list[tuple], ids: dict[int, str]) -> tuple[dict[str, int], int]:
    """Each account's spendable balance, from the final records alone, and the money still reserved."""
    balances, held = dict.fromkeys(ACCOUNTS, 0), 0
    for n, op in enumerate(ops):
        if n not in ids:
            continue
        record = cluster.status(ids[n])
        assert record is not None and record.decided, (ids[n], record)
        if op[0] == "reserve":
            event(f"a reservation ended {record.status}")  # `--hypothesis-show-statistics` shows how often
        if record.status in (REJECTED, VOIDED, EXPIRED):
            continue
        if op[0] == "deposit":
            balances[op[1]] += op[2]
        elif op[0] == "withdraw":
            balances[op[1]] -= op[2]
        else:
            paid = op[3] if record.status in (APPLIED, RESERVED) else record.fields["posted"]
            balances[op[1]] -= paid
            if record.status == RESERVED:
                held += paid
            else:
                balances[op[2]] += paid
    return balances, held


@settings(max_examples=300, deadline=None)
@given(
    ops=operations,
    partitions=st.integers(1, 4),
    seed=st.integers(0, 2**32),
    fault_rate=st.sampled_from([0.0, 0.2]),
    model=st.sampled_from(MODELS),
)
def test_reservations_posts_voids_and_expiries_in_any_order_with_crashes_conserve_money(
    ops: list[tuple], partitions: int, seed: int, fault_rate: float, model: str
) -> None:
    """Whatever the order, the crashes and the segment moves: every reservation ends in one status and the
    balances say exactly that (a hold leaves the payer, a post pays the payee what it posted); reserved money is
    counted once; no segment is below zero."""
    cluster = SimCluster(partitions, model)
    for account in ACCOUNTS:
        cluster.open(account)
    cluster.run()
    rng = random.Random(seed)
    ids: dict[int, str] = {n: f"fund-{account}" for n, account in enumerate(ACCOUNTS)}
    ops = [("deposit", account, 60) for account in ACCOUNTS] + ops
    reservations: list[str] = []
    for n, op in enumerate(ops):
        if n < len(ACCOUNTS):
            cluster.submit(client_transaction(ids[n], op))
            continue
        if op[0] in ("post", "void", "expire"):
            if not reservations:
                continue
            target = reservations[op[1] % len(reservations)]
            if cluster.status(target) is None:
                cluster.run(rng, fault_rate)  # the client waits until the API knows it (before: 404)
            resolution = (
                PostReserved(target, post_amount(cluster.status(target), op[2])) if op[0] == "post"
                else VoidReserved(target) if op[0] == "void"
                else ExpireReserved([target], AT_MS + op[2] * 1_000)
            )  # fmt: skip
            cluster.resolve(resolution, target)
        else:
            ids[n] = f"tx-{n}"
            tx = client_transaction(ids[n], op)
            if op[0] == "reserve":
                reservations.append(ids[n])
            cluster.submit_as_a_client(tx, rng, fault_rate)
        if model == CONCURRENT and rng.random() < 0.2:
            cluster.rebalance(rng.choice(ACCOUNTS))
        if rng.random() < 0.3:
            cluster.run(rng, fault_rate)
    cluster.run(rng, fault_rate)
    balances, held = expected_balances(cluster, ops, ids)
    assert {a: cluster.balance(a) for a in ACCOUNTS} == balances
    assert sum(reserved(cluster, a) for a in ACCOUNTS) == held
    assert all(s.balance >= 0 and s.reserved >= 0 for a in ACCOUNTS for s in cluster.segments(a))
    assert_audited(cluster, held)
    assert sum(cluster.meta(p).decided for p in range(partitions)) == len(ids)
