"""Where Faust or aiokafka do not do what the ledger needs, the smallest change that does; each names its cause.

* The worker's consumer must read only committed records: relays reach the transactions topic inside the ledger's
  transactions, and a fenced worker's aborted relays must never be applied. Faust reads committed records only
  under `processing_guarantee="exactly_once"`, which also swaps its producer for a per-partition transactional
  one that has open bugs (faust-streaming issues 177, 323, 517). The ledger runs its own transactions
  (`runtime.kafka_session`), so only the isolation level is taken over here.
* The ledger keeps no Faust table, and Faust then falls back to aiokafka's round-robin assignor, which does not
  publish each member's URL. Faust's own assignor does, and the web views route reads with it.
* aiokafka 0.14.0: `_wait_on_metadata` returns early for a topic already in the cluster metadata without adding it
  to the tracked topics; once the client tracks any topic, every refresh asks for those alone and replaces the
  whole partition map, so an untracked topic vanishes and sends to it wait forever (seen as a changelog batch with
  no leader, issue 8). A producer therefore tracks every topic it writes from the start.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.transport.drivers import aiokafka as faust_aiokafka

READ_COMMITTED = "read_committed"


async def track_topics(producer: AIOKafkaProducer, topics: list[str]) -> None:
    """Make the producer's metadata refreshes always include `topics` (see the module docstring)."""
    await producer.client.set_topics(topics)


class LedgerConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads both when it starts the consumer (fetcher and coordinator), after this constructor.
        consumer._isolation_level = READ_COMMITTED
        consumer._partition_assignment_strategy = (self.app.assignor,)
        return consumer


class LedgerConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return LedgerConsumerThread(self, loop=self.loop, beacon=self.beacon)


class LedgerTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the consumer above."""

    Consumer = LedgerConsumer
