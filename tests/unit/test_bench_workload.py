"""The benchmark's workload: what it funds and where it sends each transfer, per model, and the two-phase
workload's second phases (no broker needed)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict

import pytest

from bench.common import (
    Progress,
    RunSettings,
    TransferSource,
    account_names,
    funding,
    opening_balances,
    transfers_in,
)
from bench.driver import Load, Records, kafka_sender
from payments_app.domain.commands import Deposit, PostReserved, Reserve, VoidReserved
from payments_app.domain.routing import BASELINE, CONCURRENT, MODELS, decided_in, home_of
from tables.codec import decode_batch


@pytest.mark.parametrize("model", MODELS)
def test_funding_pays_each_opening_balance_into_the_segments_the_model_uses(model: str) -> None:
    settings = RunSettings(model=model, accounts=50, partitions=4)
    accounts = account_names(settings)
    funded: dict[str, dict[int, int]] = defaultdict(dict)
    for partition, deposits in funding(settings, accounts).items():
        for deposit in deposits:
            assert isinstance(deposit, Deposit)
            assert decided_in(deposit, settings.partitions, model) == partition
            funded[deposit.account][partition] = funded[deposit.account].get(partition, 0) + deposit.amount
    for account, balance in opening_balances(settings, accounts).items():
        assert sum(funded[account].values()) == balance
        if model == CONCURRENT:
            assert set(funded[account]) == set(range(settings.partitions))
        else:
            assert set(funded[account]) == {home_of(account, settings.partitions)}


@pytest.mark.parametrize("model", MODELS)
def test_every_batch_goes_to_the_partition_that_decides_its_transfers(model: str) -> None:
    settings = RunSettings(model=model, workload="hot-payer", accounts=100, partitions=4)
    source = TransferSource(settings, account_names(settings), tag="t-")
    seen: set[str] = set()
    batches: dict[int, int] = defaultdict(int)
    for _ in range(40):
        partition, batch = source.next_batch(25)
        assert len(batch) == 25
        assert {decided_in(transfer, settings.partitions, model) for transfer in batch} == {partition}
        seen.update(transfer.id for transfer in batch)
        batches[partition] += 1
    assert len(seen) == 40 * 25
    busiest = max(batches, key=batches.__getitem__)
    if model == BASELINE:  # half the transfers are the hot payer's: its home fills up fastest
        assert busiest == home_of(account_names(settings)[0], settings.partitions)
        assert batches[busiest] > 40 / 2
    else:  # spread by transaction id
        assert batches[busiest] < 40 / 2


class SlowBroker:
    """A ledger whose every send is acknowledged after a round trip, noting when each record was offered."""

    def __init__(self, round_trip_s: float) -> None:
        self.round_trip_s = round_trip_s
        self.offered_at: list[float] = []

    async def send_record(self, partition: int, payload: bytes) -> int:
        self.offered_at.append(time.monotonic())
        await asyncio.sleep(self.round_trip_s)
        return len(self.offered_at)


async def test_the_offered_rate_is_paced_while_acknowledgements_are_on_their_way() -> None:
    """16 senders at 2,000 transfers a second, records of 100, acknowledged after 100 ms: a record every 50 ms,
    never a burst of the senders that saw room before the first acknowledgement came back."""
    settings = RunSettings(accounts=100, partitions=4, batch_size=100, rate_tps=2_000, duration_s=0.6)
    broker, load = SlowBroker(round_trip_s=0.1), Load(settings)
    source = TransferSource(settings, account_names(settings), tag="p-")
    records = Records(source, settings.batch_size)
    await asyncio.gather(*(kafka_sender(broker, load, records) for _ in range(16)))  # type: ignore[arg-type]
    for sent, offered_at in enumerate(broker.offered_at):
        allowed = settings.rate_tps * (offered_at - load.started) / settings.batch_size
        assert sent <= allowed + 1, f"record {sent + 1} offered {offered_at - load.started:.3f} s in"
    assert len(broker.offered_at) >= settings.rate_tps * settings.duration_s / settings.batch_size - 2
    assert load.acked == load.submitted == len(broker.offered_at) * settings.batch_size


def test_prepared_records_come_first_then_records_are_built_as_they_are_sent() -> None:
    """The records prepared before the clock hold the source's transfers in order, encoded as the workers read
    them; past them, new ones follow, counted as built while sending; no id repeats."""
    settings = RunSettings(accounts=100, partitions=4)
    records = Records(TransferSource(settings, account_names(settings), tag="r-"), batch_size=20)
    records.prepare(100, Progress("test"))
    expected = TransferSource(settings, account_names(settings), tag="r-")
    sent = [records.next() for _ in range(len(records.prepared) + 3)]
    assert records.built_while_sending == 3 * 20
    ids: list[str] = []
    for partition, payload, transfers in sent:
        assert (partition, decode_batch(payload)) == expected.next_batch(20)
        assert transfers == 20
        ids.extend(command.id for command in decode_batch(payload))  # type: ignore[attr-defined]
    assert len(ids) == len(set(ids)) == len(sent) * 20 >= 100 + 3 * 20


def test_the_two_phase_workload_posts_or_voids_each_reservation_in_its_partitions_next_batch() -> None:
    settings = RunSettings(workload="two-phase", accounts=100, partitions=4)
    source = TransferSource(settings, account_names(settings), tag="2p-")
    reserved: dict[int, dict[str, int]] = defaultdict(dict)  # per partition: its last batch's reservations
    seconds = Counter[str]()
    for _ in range(60):
        partition, batch = source.next_batch(25)
        assert transfers_in(batch) == 25
        phases = [command for command in batch if isinstance(command, PostReserved | VoidReserved)]
        assert batch[: len(phases)] == phases  # a batch opens with the second phases of the one before
        assert {command.id for command in phases} == set(reserved[partition])
        for command in phases:
            if isinstance(command, PostReserved) and command.amount is not None:
                assert 1 <= command.amount <= reserved[partition][command.id]
            seconds[type(command).__name__ if isinstance(command, VoidReserved) or command.amount else "post all"] += 1
        reserved[partition] = {tx.id: tx.amount for tx in batch if isinstance(tx, Reserve)}
        assert {decided_in(tx, settings.partitions, settings.model) for tx in batch[len(phases) :]} == {partition}
    assert 0.4 < sum(seconds.values()) / (59 * 25) < 0.6  # about half the transfers are reservations
    assert set(seconds) == {"VoidReserved", "PostReserved", "post all"}
