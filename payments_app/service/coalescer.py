"""Coalescing: what callers hand over within a few milliseconds of each other goes out in one request.

A request's cost is mostly per request, not per byte, so the hand-over of submissions to another worker
(`service.owners.Submissions`) sends one request for everything that arrived in its window. Each caller still waits for
its own answer: none is answered before the request it went out in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Window(Generic[Item, Result]):
    items: list[Item] = field(default_factory=list)
    answers: list[asyncio.Future[Result]] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None


class Coalescer(Generic[K, Item, Result]):
    """Per key, the items handed over within `linger_s` of the first, delivered together (at once when their sizes
    reach `max_size`); `deliver(key, items)` answers each item, with a result or an exception for that item alone.
    If `deliver` raises, every item of the window gets that exception."""

    def __init__(
        self,
        deliver: Callable[[K, list[Item]], Awaitable[list[Result | BaseException]]],
        linger_s: float,
        max_size: int,
    ) -> None:
        self._deliver = deliver
        self.linger_s = linger_s
        self.max_size = max_size
        self._windows: dict[K, _Window[Item, Result]] = {}
        self._deliveries: set[asyncio.Task[None]] = set()

    async def submit(self, key: K, item: Item, size: int = 1) -> Result:
        loop = asyncio.get_running_loop()
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
            window.timer = loop.call_later(self.linger_s, self._flush, key, window)
        answer: asyncio.Future[Result] = loop.create_future()
        window.items.append(item)
        window.answers.append(answer)
        window.size += size
        if window.size >= self.max_size:
            self._flush(key, window)
        return await answer

    def _flush(self, key: K, window: _Window[Item, Result]) -> None:
        if self._windows.get(key) is not window:
            return  # already flushed, full
        del self._windows[key]
        if window.timer is not None:
            window.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._send(key, window))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _send(self, key: K, window: _Window[Item, Result]) -> None:
        try:
            results = await self._deliver(key, window.items)
            if len(results) != len(window.items):
                raise RuntimeError(f"{len(results)} answers to {len(window.items)} items")
        except Exception as exc:  # noqa: BLE001 - every caller must learn of the failure
            results = [exc] * len(window.items)
        for answer, result in zip(window.answers, results, strict=True):
            if answer.done():
                continue
            if isinstance(result, BaseException):
                answer.set_exception(result)
            else:
                answer.set_result(result)
