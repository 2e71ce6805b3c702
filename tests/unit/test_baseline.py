"""The baseline (account-partitioned) model: money stays in the account's home, transfers relay the credit."""

from __future__ import annotations

from payments_app.domain.commands import Deposit, Transfer, Withdrawal
from payments_app.domain.ledger import APPLIED, INSUFFICIENT_FUNDS, MISROUTED, REJECTED
from payments_app.domain.routing import BASELINE, CONCURRENT, decided_in, home_of
from tests.unit.simulation import SimCluster

PARTITIONS = 4


def accounts_with_different_homes() -> tuple[str, str]:
    names = [f"acct-{n}" for n in range(20)]
    payer = names[0]
    payee = next(n for n in names if home_of(n, PARTITIONS) != home_of(payer, PARTITIONS))
    return payer, payee


def baseline(balances: dict[str, int]) -> SimCluster:
    cluster = SimCluster(PARTITIONS, BASELINE)
    for account, amount in balances.items():
        cluster.open(account)
        cluster.submit(Deposit(f"fund-{account}", account, amount))
    cluster.run()
    return cluster


def segment_balances(cluster: SimCluster, account: str) -> list[int]:
    return [s.balance for s in cluster.segments(account)]


def test_transactions_are_decided_in_the_payers_home() -> None:
    payer, payee = accounts_with_different_homes()
    transfer = Transfer("t1", payer, payee, 5)
    assert decided_in(transfer, PARTITIONS, BASELINE) == home_of(payer, PARTITIONS)
    assert decided_in(Deposit("d1", payee, 5), PARTITIONS, BASELINE) == home_of(payee, PARTITIONS)
    assert decided_in(transfer, PARTITIONS, CONCURRENT) == decided_in(Deposit("t1", payee, 5), PARTITIONS, CONCURRENT)


def test_a_transfer_debits_the_payers_home_and_credits_the_payees_home() -> None:
    payer, payee = accounts_with_different_homes()
    cluster = baseline({payer: 100, payee: 0})
    cluster.submit(Transfer("t1", payer, payee, 30))
    cluster.run()
    assert cluster.status("t1").status == APPLIED
    payer_segments, payee_segments = segment_balances(cluster, payer), segment_balances(cluster, payee)
    assert payer_segments[home_of(payer, PARTITIONS)] == 70 and sum(payer_segments) == 70
    assert payee_segments[home_of(payee, PARTITIONS)] == 30 and sum(payee_segments) == 30
    report = cluster.audit()
    assert report.ok, report.problems
    assert report.in_flight == 0


def test_the_credit_is_in_flight_until_the_payees_home_applies_it() -> None:
    payer, payee = accounts_with_different_homes()
    cluster = baseline({payer: 100, payee: 0})
    cluster.submit(Transfer("t1", payer, payee, 30))
    cluster.step(home_of(payer, PARTITIONS))
    assert cluster.status("t1").status == APPLIED
    assert cluster.balance(payee) == 0
    report = cluster.audit()
    assert report.ok, report.problems
    assert report.in_flight == 30


def test_an_overdraft_is_rejected_at_once_without_asking_other_partitions() -> None:
    payer, payee = accounts_with_different_homes()
    cluster = baseline({payer: 10, payee: 0})
    cluster.submit(Transfer("t-over", payer, payee, 11))
    cluster.submit(Withdrawal("w-over", payer, 11))
    cluster.step(home_of(payer, PARTITIONS))
    cluster.step(home_of(payer, PARTITIONS))
    assert cluster.pending() == []
    for tx_id in ("t-over", "w-over"):
        record = cluster.status(tx_id)
        assert (record.status, record.reason) == (REJECTED, INSUFFICIENT_FUNDS)
    assert cluster.balance(payer) == 10 and cluster.balance(payee) == 0


def test_a_transaction_sent_outside_the_payers_home_is_refused() -> None:
    payer, payee = accounts_with_different_homes()
    cluster = baseline({payer: 10, payee: 0})
    elsewhere = (home_of(payer, PARTITIONS) + 1) % PARTITIONS
    cluster.submit(Deposit("d-wrong", payer, 5), partition=elsewhere)
    cluster.submit(Transfer("t-wrong", payer, payee, 5), partition=elsewhere)
    cluster.run()
    for tx_id in ("d-wrong", "t-wrong"):
        record = cluster.status(tx_id)
        assert (record.status, record.reason) == (REJECTED, MISROUTED)
    assert cluster.balance(payer) == 10 and cluster.balance(payee) == 0
    assert cluster.audit().ok


def test_a_replayed_credit_is_applied_once() -> None:
    payer, payee = accounts_with_different_homes()
    cluster = baseline({payer: 100, payee: 0})
    cluster.submit(Transfer("t1", payer, payee, 30))
    cluster.step(home_of(payer, PARTITIONS))
    cluster.rewind(home_of(payer, PARTITIONS), 1)
    cluster.run()
    assert cluster.balance(payer) == 70 and cluster.balance(payee) == 30
    assert cluster.audit().ok
