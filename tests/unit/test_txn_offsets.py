"""How the offsets of a transaction reach the group's coordinator when its node is down: sent again until the node
answers or `COORDINATOR_WAIT_S` has passed, then a time-out (the commit's outcome unknown), never a plain failure
that stops the worker.

The producer is a stand-in: its client fails the first sends as aiokafka does for a node that is not ready."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, NodeNotReadyError

from payments_app.runtime import txn_offsets
from payments_app.runtime.txn_offsets import CoordinationType, _send


def producer_failing(times: int) -> Any:
    """A producer whose coordinator cannot be reached for the first `times` sends; `dead` counts the lookups
    forgotten."""
    calls = SimpleNamespace(sent=0, dead=0)

    async def find_coordinator(kind: Any, key: str) -> int:
        return 2

    def coordinator_dead(kind: Any) -> None:
        calls.dead += 1

    async def send(node_id: int, request: Any, group: Any) -> Any:
        calls.sent += 1
        if calls.sent <= times:
            raise NodeNotReadyError(f"node {node_id} is not ready")
        return SimpleNamespace(error_code=0)

    sender = SimpleNamespace(_find_coordinator=find_coordinator, _coordinator_dead=coordinator_dead)
    return SimpleNamespace(_sender=sender, client=SimpleNamespace(send=send)), calls


async def test_a_coordinator_on_a_node_down_is_asked_again_past_a_hundred_tries(monkeypatch: Any) -> None:
    monkeypatch.setattr(txn_offsets, "RETRY_BACKOFF_S", 0.0)
    producer, calls = producer_failing(times=250)
    await _send(producer, CoordinationType.GROUP, "payments", object(), lambda response: [response.error_code])
    assert calls.sent == 251 and calls.dead == 250


async def test_a_coordinator_that_never_answers_ends_in_a_time_out(monkeypatch: Any) -> None:
    monkeypatch.setattr(txn_offsets, "RETRY_BACKOFF_S", 0.01)
    monkeypatch.setattr(txn_offsets, "COORDINATOR_WAIT_S", 0.1)
    producer, calls = producer_failing(times=10**9)
    with pytest.raises(KafkaTimeoutError, match="no answer from the GROUP coordinator"):
        await _send(producer, CoordinationType.GROUP, "payments", object(), lambda response: [response.error_code])
    assert calls.sent > 1
