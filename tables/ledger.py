"""The ledger table: every partition's segments, transaction statuses and meta, as raw orjson entries.

Keys are `"{partition}/{ledger key}"` so that an entry names the partition that owns it, even when read
outside an event (by a web view). The changelog is partitioned like the transactions topic, so partition p
of this table holds exactly the state of segment p.
"""

from __future__ import annotations

from payments_app.app import app
from payments_app.settings import SETTINGS

LEDGER_TABLE = "ledger"

ledger_table = app.Table(
    LEDGER_TABLE,
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


# Faust derives serializers from key/value types (json for bytes); entries are already orjson bytes.
ledger_table.key_serializer = "raw"
ledger_table.value_serializer = "raw"


def storage_key(partition: int, key: str) -> bytes:
    return f"{partition}/{key}".encode()
