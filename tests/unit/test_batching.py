"""The web layer's batcher: one send per linger window, one record per partition in it, and nobody answered before
the broker."""

from __future__ import annotations

import asyncio

import pytest

from payments_app.batching import PartitionBatcher
from payments_app.codec import MAX_COMMANDS_PER_RECORD, chunks, encode_batch
from payments_app.domain.commands import Command, Deposit, Transfer
from payments_app.domain.money import MAX_AMOUNT_MINOR


def deposit(n: int) -> Deposit:
    return Deposit(f"d{n}", "alice", 1)


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.records: list[dict] = []
        self.fail = fail
        self.release = asyncio.Event()

    async def send(self, by_partition: dict) -> None:
        await self.release.wait()
        if self.fail:
            raise ConnectionError("broker gone")
        self.records.append(by_partition)


async def test_requests_within_the_window_share_one_send_with_one_record_per_partition() -> None:
    recorder = Recorder()
    batcher = PartitionBatcher(recorder.send, linger_s=0.01)
    calls = [
        asyncio.create_task(batcher.submit({0: [deposit(1)], 1: [deposit(2)]})),
        asyncio.create_task(batcher.submit({0: [deposit(3), deposit(4)]})),
    ]
    await asyncio.sleep(0.05)
    assert not any(call.done() for call in calls), "answered before the broker acknowledged"
    later = asyncio.create_task(batcher.submit({1: [deposit(5)]}))  # the next window
    await asyncio.sleep(0.05)
    recorder.release.set()
    await asyncio.gather(*calls, later)
    assert recorder.records == [{0: [deposit(1), deposit(3), deposit(4)], 1: [deposit(2)]}, {1: [deposit(5)]}]


async def test_a_full_buffer_is_sent_without_waiting_for_the_window() -> None:
    recorder = Recorder()
    recorder.release.set()
    batcher = PartitionBatcher(recorder.send, linger_s=60, max_commands=3)
    await asyncio.wait_for(batcher.submit({0: [deposit(1), deposit(2), deposit(3)]}), timeout=1)
    assert recorder.records == [{0: [deposit(1), deposit(2), deposit(3)]}]


async def test_a_failed_send_fails_every_request_in_it() -> None:
    recorder = Recorder(fail=True)
    recorder.release.set()
    batcher = PartitionBatcher(recorder.send, linger_s=0.001)
    results = await asyncio.gather(
        batcher.submit({0: [deposit(1)]}), batcher.submit({0: [deposit(2)]}), return_exceptions=True
    )
    assert all(isinstance(result, ConnectionError) for result in results)
    with pytest.raises(ConnectionError):
        await batcher.submit({2: [deposit(3)]})


def test_a_long_list_of_commands_is_cut_into_records_in_order() -> None:
    """A group's relays to one partition once exceeded the producer's 1 MB limit and stopped the worker."""
    longest = [
        Transfer(f"{n:064d}", "p" * 64, "q" * 64, MAX_AMOUNT_MINOR) for n in range(2 * MAX_COMMANDS_PER_RECORD + 5)
    ]
    commands: list[Command] = list(longest)
    pieces = chunks(commands)
    assert [len(piece) for piece in pieces] == [MAX_COMMANDS_PER_RECORD, MAX_COMMANDS_PER_RECORD, 5]
    assert [c for piece in pieces for c in piece] == commands
    assert max(len(encode_batch(piece)) for piece in pieces) < 2**20 * 3 // 4  # the producer refuses 1 MiB
    assert chunks([]) == []
