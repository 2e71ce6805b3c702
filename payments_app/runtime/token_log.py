"""The API's grants on a compacted topic, read whole by every worker, so a token minted at one works at all.

A grant is written under its token id; a revoked token is a tombstone. Each worker follows the topic from its
start into its `Keyring`. The worker that mints or revokes waits until it has read its own write back, so the
answer to `POST /tokens` or `DELETE /tokens/{id}` holds on that worker at once; the others read it within the
poll interval (milliseconds while they run). A worker shown a token it does not know reads up to the topic's end
before it refuses it (`catch_up`), so a token works on every worker as soon as its minting was answered.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ConsumerStoppedError

from payments_app.domain.access import Grant, Keyring
from payments_app.runtime.broker_waits import REQUEST_TIMEOUT_MS, end_offsets

POLL_TIMEOUT_MS = 500
#: how long a minting or revoking request waits to read its own write back before it fails
READ_BACK_TIMEOUT_S = 10.0
log = logging.getLogger(__name__)


class TokenLog:
    def __init__(self, bootstrap: str, topic: str, keyring: Keyring) -> None:
        self.keyring = keyring
        self._tp = TopicPartition(topic, 0)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=REQUEST_TIMEOUT_MS
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=REQUEST_TIMEOUT_MS
        )
        self._position = 0
        self._end_at_start: int | None = None
        self._moved = asyncio.Event()
        self._catching_up: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        """Every grant written before this worker started has been read."""
        return self._end_at_start is not None and self._position >= self._end_at_start

    async def start(self) -> None:
        await self._consumer.start()
        await self._producer.start()
        self._consumer.assign([self._tp])
        await self._consumer.seek_to_beginning(self._tp)
        self._end_at_start = await self._end()

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._producer.stop()

    async def follow(self) -> None:
        """Apply every grant and tombstone, for as long as the worker runs (until `stop`)."""
        while True:
            try:
                batches = await self._consumer.getmany(self._tp, timeout_ms=POLL_TIMEOUT_MS)
            except ConsumerStoppedError:
                return
            for message in batches.get(self._tp, ()):
                self._apply(message.key, message.value)
            self._position = await self._consumer.position(self._tp)
            self._moved.set()
            self._moved.clear()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            log.warning("a record without a key on the tokens topic was skipped")
        elif value is None:
            self.keyring.revoke(key.decode())
        else:
            self.keyring.put(Grant.from_dict(orjson.loads(value)))

    async def catch_up(self) -> None:
        """Read up to the topic's end as of now (callers at the same time share one look at the end)."""
        if self._catching_up is None or self._catching_up.done():
            self._catching_up = asyncio.get_running_loop().create_task(self._read_to_end())
        await asyncio.shield(self._catching_up)

    async def _read_to_end(self) -> None:
        end = await self._end()
        async with asyncio.timeout(READ_BACK_TIMEOUT_S):
            while self._position < end:
                await self._moved.wait()

    async def _end(self) -> int:
        """The topic's end offset, waiting out a broker that does not answer (restarting, or its leader moving)."""
        return (await end_offsets(self._consumer, [self._tp], "the tokens' end"))[self._tp]

    async def publish(self, grant: Grant) -> None:
        await self._write(grant.id, orjson.dumps(grant.to_dict()))

    async def revoke(self, token_id: str) -> None:
        await self._write(token_id, None)

    async def _write(self, token_id: str, value: bytes | None) -> None:
        metadata = await self._producer.send_and_wait(self._tp.topic, value, key=token_id.encode(), partition=0)
        async with asyncio.timeout(READ_BACK_TIMEOUT_S):
            while self._position <= metadata.offset:
                await self._moved.wait()
