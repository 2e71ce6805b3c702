"""Coalescing: one delivery per linger window and key, nobody answered before it; and records cut to size."""

from __future__ import annotations

import asyncio

import pytest

from payments_app.domain.commands import Command, Transfer
from payments_app.domain.money import MAX_AMOUNT_MINOR
from payments_app.service.coalescer import Coalescer
from tables.codec import MAX_COMMANDS_PER_RECORD, chunks, encode_batch


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.deliveries: list[tuple[str, list[int]]] = []
        self.fail = fail
        self.release = asyncio.Event()

    async def deliver(self, key: str, items: list[int]) -> list[int | BaseException]:
        await self.release.wait()
        if self.fail:
            raise ConnectionError("owner gone")
        self.deliveries.append((key, items))
        return [item * 10 for item in items]


async def test_items_within_the_window_share_one_delivery_per_key() -> None:
    recorder = Recorder()
    coalescer: Coalescer[str, int, int] = Coalescer(recorder.deliver, linger_s=0.01, max_size=100)
    calls = [asyncio.create_task(coalescer.submit(key, item)) for key, item in [("a", 1), ("b", 2), ("a", 3)]]
    await asyncio.sleep(0.05)
    assert not any(call.done() for call in calls), "answered before the delivery"
    later = asyncio.create_task(coalescer.submit("a", 4))  # the next window
    await asyncio.sleep(0.05)
    recorder.release.set()
    assert await asyncio.gather(*calls, later) == [10, 20, 30, 40]
    assert sorted(recorder.deliveries) == [("a", [1, 3]), ("a", [4]), ("b", [2])]


async def test_a_full_window_is_delivered_without_waiting_for_it_to_end() -> None:
    recorder = Recorder()
    recorder.release.set()
    coalescer: Coalescer[str, int, int] = Coalescer(recorder.deliver, linger_s=60, max_size=3)
    assert await asyncio.wait_for(coalescer.submit("a", 1, size=3), timeout=1) == 10
    assert recorder.deliveries == [("a", [1])]


async def test_a_failed_delivery_fails_every_item_in_it() -> None:
    recorder = Recorder(fail=True)
    recorder.release.set()
    coalescer: Coalescer[str, int, int] = Coalescer(recorder.deliver, linger_s=0.001, max_size=100)
    results = await asyncio.gather(coalescer.submit("a", 1), coalescer.submit("a", 2), return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)
    with pytest.raises(ConnectionError):
        await coalescer.submit("b", 3)


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
