"""Submissions a worker hands to their partitions' owner, coalesced: one internal request per owner carries every
submission that arrived within `linger_s`, instead of one request each.

A client's single transfer reaches the owner of its partition only half the time with two workers (one time in N
with N); each hand-over was an HTTP request on both sides, a client's and a server's, for one transfer.
Submissions are only coalesced with others that wait for their decision as long (`?wait=`): the owner answers a
coalesced request when all of its submissions are answered.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from payments_app.fanout import post_json
from payments_app.intake import Backlogged
from payments_app.settings import SETTINGS


@dataclass(slots=True)
class _Pending:
    payloads: list[Any] = field(default_factory=list)
    answers: list[asyncio.Future[Any]] = field(default_factory=list)


class Forwarder:
    """Per owner's URL and wait, a list of submissions flushed after `linger_s` or at `max_items`."""

    def __init__(self, linger_s: float, max_items: int = 256) -> None:
        self.linger_s = linger_s
        self.max_items = max_items
        self._pending: dict[tuple[str, float], _Pending] = {}
        self._deliveries: set[asyncio.Task[None]] = set()

    async def post(self, url: str, payload: dict[str, Any], timeout_s: float) -> Any:
        """The owner's answers to one partition's submission (`{"partition", "transactions", "wait_s"}`) posted to
        its `url` (`web.internal.submit`); raises LookupError if it does not own the partition (any more),
        Backlogged if it holds too many undecided."""
        key = (url, float(payload["wait_s"]))
        loop = asyncio.get_running_loop()
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
            loop.call_later(self.linger_s, self._flush, key, pending, timeout_s)
        answer: asyncio.Future[Any] = loop.create_future()
        pending.payloads.append(payload)
        pending.answers.append(answer)
        if len(pending.payloads) >= self.max_items:
            self._flush(key, pending, timeout_s)
        return await answer

    def _flush(self, key: tuple[str, float], pending: _Pending, timeout_s: float) -> None:
        if self._pending.get(key) is not pending:
            return  # already flushed, at max_items
        del self._pending[key]
        task = asyncio.get_running_loop().create_task(self._deliver(key[0], pending, timeout_s))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    @staticmethod
    async def _deliver(url: str, pending: _Pending, timeout_s: float) -> None:
        try:
            items = await post_json(url, pending.payloads, timeout_s)
        except Exception as exc:  # noqa: BLE001 - every submission must learn of the failure
            for answer in pending.answers:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for answer, item in zip(pending.answers, items, strict=True):
            if answer.done():
                continue
            if "answers" in item:
                answer.set_result(item["answers"])
            elif item["error"] == "backlogged":
                answer.set_exception(Backlogged(item["detail"]))
            else:
                answer.set_exception(LookupError(item["detail"]))


FORWARDS = Forwarder(linger_s=SETTINGS.forward_linger_ms / 1000)
