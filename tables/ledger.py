"""The ledger table: every partition's segments, transaction statuses and meta, as raw orjson entries.

Keys are `"{partition}/{ledger key}"` so that an entry names the partition that owns it, even when read
outside an event (by a web view). The changelog is partitioned like the transactions topic, so partition p
of this table holds exactly the state of segment p.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.types import CodecArg, FutureMessage

from payments_app.app import app
from payments_app.settings import SETTINGS

LEDGER_TABLE = "ledger"


class LedgerTable(faust.Table):
    """A table whose writes can be awaited until the changelog broker has acknowledged them.

    Faust commits a source offset after `producer.flush()`, but its producer buffer's flush gives up after
    100 ms and can return with changelog messages still queued. The ledger agent therefore waits for its own
    batch's changelog writes before it moves on, so a committed offset always implies a durable changelog.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unacknowledged: list[FutureMessage] = []
        # Faust derives serializers from key/value types (json for bytes); entries are already orjson bytes.
        self.key_serializer = "raw"
        self.value_serializer = "raw"

    def send_changelog(
        self,
        partition: int | None,
        key: Any,
        value: Any,
        key_serializer: CodecArg | None = None,
        value_serializer: CodecArg | None = None,
    ) -> FutureMessage:
        future = super().send_changelog(partition, key, value, key_serializer, value_serializer)
        self._unacknowledged.append(future)
        return future

    async def changelog_acknowledged(self) -> None:
        """Return once every changelog write made so far is acknowledged by the broker."""
        pending, self._unacknowledged = self._unacknowledged, []
        if pending:
            await asyncio.gather(*pending)


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
