"""Group commands that arrive within a few milliseconds into one Kafka record per partition, all sent together.

Each HTTP request still returns only once its own commands are acknowledged by the broker; it just shares the
record (and the agent's per-record cost) with the requests that arrived alongside it. One window for every
partition, not one each, so a window's records go to the broker in one produce request: the broker's and the
client's cost is per request (a worker's windows per partition were a produce request each, four times as many).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from payments_app.domain.commands import Command

Sender = Callable[[dict[int, list[Command]]], Awaitable[None]]


@dataclass
class _Window:
    by_partition: dict[int, list[Command]] = field(default_factory=dict)
    commands: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class PartitionBatcher:
    """One buffer for all partitions, flushed `linger_s` after its first command, or at once at `max_commands`."""

    def __init__(self, send: Sender, linger_s: float = 0.002, max_commands: int = 2_000) -> None:
        self._send = send
        self.linger_s = linger_s
        self.max_commands = max_commands
        self._window: _Window | None = None
        self._flushes: set[asyncio.Task[None]] = set()

    async def submit(self, by_partition: dict[int, list[Command]]) -> None:
        """Return once every command given here is in a record the broker acknowledged."""
        if not any(by_partition.values()):
            return
        loop = asyncio.get_running_loop()
        window = self._window
        if window is None:
            window = self._window = _Window()
            window.timer = loop.call_later(self.linger_s, self._flush, window)
        for partition, commands in by_partition.items():
            if commands:
                window.by_partition.setdefault(partition, []).extend(commands)
                window.commands += len(commands)
        waiter: asyncio.Future[None] = loop.create_future()
        window.waiters.append(waiter)
        if window.commands >= self.max_commands:
            self._flush(window)
        await waiter

    def _flush(self, window: _Window) -> None:
        if self._window is not window:
            return  # already flushed, full
        self._window = None
        if window.timer is not None:
            window.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._deliver(window))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _deliver(self, window: _Window) -> None:
        try:
            await self._send(window.by_partition)
        except Exception as exc:  # noqa: BLE001 - every waiter must learn of the failure
            for waiter in window.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
        else:
            for waiter in window.waiters:
                if not waiter.done():
                    waiter.set_result(None)
