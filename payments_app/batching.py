"""Group commands bound for the same partition that arrive within a few milliseconds into one Kafka record.

Each HTTP request still returns only once its own commands are acknowledged by the broker; it just shares the
record (and the agent's per-record cost) with the requests that arrived alongside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from payments_app.domain.commands import Command

Sender = Callable[[dict[int, list[Command]]], Awaitable[None]]


@dataclass
class _Pending:
    commands: list[Command] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class PartitionBatcher:
    """Per-partition buffers flushed after `linger_s`, or at once when `max_commands` are waiting."""

    def __init__(self, send: Sender, linger_s: float = 0.002, max_commands: int = 2_000) -> None:
        self._send = send
        self.linger_s = linger_s
        self.max_commands = max_commands
        self._pending: dict[int, _Pending] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    async def submit(self, by_partition: dict[int, list[Command]]) -> None:
        """Return once every command given here is in a record the broker acknowledged."""
        loop = asyncio.get_running_loop()
        waiters = []
        for partition, commands in by_partition.items():
            if not commands:
                continue
            pending = self._pending.setdefault(partition, _Pending())
            pending.commands.extend(commands)
            waiter: asyncio.Future[None] = loop.create_future()
            pending.waiters.append(waiter)
            waiters.append(waiter)
            if len(pending.commands) >= self.max_commands:
                self._flush(partition)
            elif pending.timer is None:
                pending.timer = loop.call_later(self.linger_s, self._flush, partition)
        await asyncio.gather(*waiters)

    def _flush(self, partition: int) -> None:
        pending = self._pending.pop(partition, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._deliver(partition, pending))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _deliver(self, partition: int, pending: _Pending) -> None:
        try:
            await self._send({partition: pending.commands})
        except Exception as exc:  # noqa: BLE001 - every waiter must learn of the failure
            for waiter in pending.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
        else:
            for waiter in pending.waiters:
                if not waiter.done():
                    waiter.set_result(None)
