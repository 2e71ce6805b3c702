"""How a session's commit failure is read: a revoked session's failed commit is a fence; any other stops the worker.

The producer is a stand-in that fails the way Kafka 4.0's transaction coordinator fails an EndTxn that crosses the
new owner's InitProducerId (an unknown server error instead of ProducerFenced)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from aiokafka.errors import KafkaError, ProducerFenced, UnknownError

from payments_app.runtime.commit import Fenced
from payments_app.runtime.kafka_session import KafkaSession


class FailingProducer:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def begin_transaction(self) -> None:
        raise self.error


def session(error: Exception, retired: bool) -> KafkaSession:
    unused = cast(Any, None)
    return KafkaSession(0, unused, unused, unused, cast(Any, FailingProducer(error)), retired=retired)


async def test_a_revoked_sessions_failed_commit_is_a_fence_and_closes_it() -> None:
    revoked = session(KafkaError("Unexpected error during batch delivery"), retired=True)
    with pytest.raises(Fenced):
        await revoked.commit([(b"0/m", b"{}")], {})
    assert revoked.closed
    with pytest.raises(Fenced):  # nothing more commits through it
        await revoked.commit([(b"0/m", b"{}")], {})


async def test_an_owned_sessions_failed_commit_is_raised_as_is() -> None:
    owned = session(UnknownError(), retired=False)
    with pytest.raises(UnknownError):
        await owned.commit([(b"0/m", b"{}")], {})
    assert not owned.closed


async def test_a_fence_is_a_fence_whether_revoked_or_not() -> None:
    with pytest.raises(Fenced):
        await session(ProducerFenced(), retired=False).commit([(b"0/m", b"{}")], {})
