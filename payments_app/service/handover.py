"""Submissions a worker hands to their partitions' owner, coalesced (`coalescer.Coalescer`): one internal request per
owner carries every submission that arrived within `linger_s`, instead of one request each.

A client's single transfer reaches the owner of its partition only half the time with two workers (one time in N
with N); each hand-over was an HTTP request on both sides, a client's and a server's, for one transfer.
Submissions are only coalesced with others that wait for their decision as long (`?wait=`): the owner answers a
coalesced request when all of its submissions are answered.
"""

from __future__ import annotations

from typing import Any

from payments_app.service.coalescer import Coalescer
from payments_app.service.errors import Backlogged, NotOwner
from payments_app.service.intake import Verdict
from payments_app.service.owners import post_json
from payments_app.settings import SETTINGS

#: where a coalesced request goes and how long it may take: (owner's URL, the submissions' wait, timeout)
Key = tuple[str, float, float]


class Handover:
    """Per owner's URL and wait, the submissions handed over within `linger_s`, in one request (at once at
    `max_items`)."""

    def __init__(self, linger_s: float, max_items: int = 256) -> None:
        self._coalescer: Coalescer[Key, dict[str, Any], Any] = Coalescer(self._deliver, linger_s, max_items)

    async def post(self, url: str, payload: dict[str, Any], timeout_s: float) -> Any:
        """The owner's answers to one partition's submission (`{"partition", "transactions", "wait_s"}`) posted to
        its `url` (`web.internal.submit`); raises NotOwner if it does not own the partition (any more),
        Backlogged if it holds too many undecided."""
        return await self._coalescer.submit((url, float(payload["wait_s"]), timeout_s), payload)

    @staticmethod
    async def _deliver(key: Key, payloads: list[dict[str, Any]]) -> list[Any]:
        url, _, timeout_s = key
        return [_answer(item) for item in await post_json(url, payloads, timeout_s)]


def _answer(item: dict[str, Any]) -> Any:
    """One submission's part of the owner's answer: its answers, or its own refusal as an exception."""
    if "answers" in item:
        return [(Verdict(verdict), body) for verdict, body in item["answers"]]
    if item["error"] == "backlogged":
        return Backlogged(item["detail"])
    return NotOwner(item["detail"])


HANDOVER = Handover(linger_s=SETTINGS.forward_linger_s)
