"""Waiting out a broker that does not answer: a node down or paused, a partition's leader moving to another node.

With replicated topics none of these loses anything, and each ends by itself within seconds (the controller moves
leadership away from a node it stops hearing from, and a client that times out on a node asks for fresh metadata).
So a request that fails with a retriable error, or times out, is sent again until `BROKER_WAIT_S` has passed:
only then does the caller's failure policy apply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, KafkaTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: a request to a node that stopped answering fails after this long, and the client looks up where the partition's
#: leader is now (aiokafka's default is 40 s, much longer than the controller takes to move the leader: 9 s)
REQUEST_TIMEOUT_MS = 10_000
#: how long a read waits for the brokers to answer again before it fails
BROKER_WAIT_S = 120.0
RETRY_BACKOFF_S = 0.5


def passes(exc: BaseException) -> bool:
    """Whether a failed request may succeed if sent again (Kafka says so, or it timed out on a silent node)."""
    return isinstance(exc, KafkaTimeoutError) or (isinstance(exc, KafkaError) and exc.retriable)


async def until_answered(
    call: Callable[[], Awaitable[T]], what: str, client: AIOKafkaClient | None = None, within_s: float = BROKER_WAIT_S
) -> T:
    """`call()`'s result, calling it again after each failure that `passes`, for up to `within_s`. After a time-out
    `client` (the one `call` uses) asks for fresh metadata: a call that times out as a whole (a consumer's offsets
    lookup) cancels its request rather than failing it, so the client would ask the same silent node again."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await call()
        except KafkaError as exc:
            if not passes(exc) or time.monotonic() > deadline:
                raise
            log.warning("%s: %r; asking again", what, exc)
            if client is not None and isinstance(exc, KafkaTimeoutError):
                client.force_metadata_update()
        await asyncio.sleep(RETRY_BACKOFF_S)


async def end_offsets(consumer: AIOKafkaConsumer, tps: list[TopicPartition], what: str) -> dict[TopicPartition, int]:
    """The partitions' ends as `consumer` reads them (its isolation level: high watermarks, or last stable offsets),
    waiting out a node that does not answer."""
    return await until_answered(lambda: consumer.end_offsets(tps), what, consumer._client)  # type: ignore[no-any-return]
