"""The ledger table: every partition's segments, transaction statuses and meta, as raw orjson entries.

Keys are `"{partition}/{ledger key}"` so that an entry names the partition that owns it, even when read
outside an event (by a web view). The changelog is partitioned like the transactions topic, so partition p
of this table holds exactly the state of segment p.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any, cast

import faust
import rocksdict
from faust.types import TP, RecordMetadata

from payments_app.app import app
from payments_app.settings import SETTINGS

LEDGER_TABLE = "ledger"


class LedgerTable(faust.Table):
    """A table written a whole batch at a time, whose writes can be awaited until the broker has them.

    `table[key] = value` costs a Faust future, a producer-buffer hop and a RocksDB put per key, which was most
    of a worker's time (see BENCHMARKS.md). `write` stores a batch's entries in one RocksDB write batch and
    hands them straight to the producer; the changelog stays one message per key, so compaction and Faust's
    own restore work unchanged.

    Faust commits a source offset after `producer.flush()`, but its producer buffer's flush gives up after
    100 ms and can return with changelog messages still queued. The ledger agent therefore waits for its own
    batch's changelog writes before it moves on, so a committed offset always implies a durable changelog.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unacknowledged: list[asyncio.Future[RecordMetadata]] = []
        self._last_written: dict[int, asyncio.Future[RecordMetadata]] = {}
        # Faust derives serializers from key/value types (json for bytes); entries are already orjson bytes.
        self.key_serializer = "raw"
        self.value_serializer = "raw"

    def read(self, partition: int, key: bytes) -> bytes | None:
        """An entry of a partition this worker holds, straight from that partition's RocksDB."""
        return self._partition_db(partition).get(key)

    def scan(self, partition: int, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries of a partition this worker holds whose keys start with `prefix`, in key order."""
        for key, value in self._partition_db(partition).items(from_key=prefix):
            if not key.startswith(prefix):
                return
            yield key, value

    async def write(self, partition: int, entries: Sequence[tuple[bytes, bytes]]) -> None:
        """Store the entries in order (one RocksDB write) and send them, in order, to the changelog."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in entries:
            batch.put(key, value)
        self._partition_db(partition).write(batch)
        topic = self.changelog_topic.get_topic_name()
        for key, value in entries:
            sent = cast(asyncio.Future, await self.app.producer.send(topic, key, value, partition, None, None))
            self._unacknowledged.append(sent)
            self._last_written[partition] = sent

    async def changelog_acknowledged(self) -> None:
        """Return once every changelog write made so far is acknowledged by the broker."""
        pending, self._unacknowledged = self._unacknowledged, []
        last, self._last_written = self._last_written, {}
        # Acknowledgements arrive in order per partition: wait for the last ones, then check every one (those
        # are done by then, so awaiting them costs nothing; gathering thousands of futures costs a lot).
        await asyncio.gather(*last.values())
        for sent in pending:
            await sent  # a failed write raises here
        topic = self.changelog_topic.get_topic_name()
        for partition, sent in last.items():
            # where a later restore of this partition into this worker's RocksDB may start reading
            self.data.set_persisted_offset(TP(topic, partition), sent.result().offset)

    def _partition_db(self, partition: int) -> rocksdict.Rdict:
        # faust's rocksdb Store keeps one database per partition; it has no public accessor for one
        return self.data._db_for_partition(partition)  # type: ignore[attr-defined]


ledger_table: LedgerTable = app.tables.add(
    LedgerTable(
        app,
        name=LEDGER_TABLE,
        beacon=app.tables.beacon,
        key_type=bytes,
        value_type=bytes,
        partitions=SETTINGS.partitions,
        options={
            "driver": "rocksdict",
            "block_cache_size": SETTINGS.rocksdb_block_cache_bytes,
            "block_cache_compressed_size": SETTINGS.rocksdb_block_cache_bytes,
            "write_buffer_size": SETTINGS.rocksdb_write_buffer_bytes,
        },
    )
)


def storage_key(partition: int, key: str) -> bytes:
    return f"{partition}/{key}".encode()
