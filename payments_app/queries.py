"""Reads of this worker's own partitions of the ledger table, for web views and the reconciler.

Only agents write tables; everything here only reads, and only partitions this worker actively owns.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from payments_app.app import app
from payments_app.codec import decode_entry
from payments_app.domain.invariants import AuditReport, audit_partition
from payments_app.domain.ledger import META_KEY, PartitionMeta
from payments_app.domain.segments import Segment
from payments_app.topics import TRANSACTIONS_TOPIC
from tables.ledger import ledger_table, storage_key


def owned_partitions() -> set[int]:
    """Partitions of the transactions topic (and so of the ledger) this worker processes now."""
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == TRANSACTIONS_TOPIC}


def is_ready() -> bool:
    """True once the worker has an assignment and has restored its tables."""
    recovery = app.tables.recovery
    return recovery.completed.is_set() and not app.in_recovery and not app.rebalancing


def read_values(requests: list[tuple[int, str]]) -> list[dict[str, Any] | None]:
    """Current values of ledger keys in partitions owned here; raises LookupError for one owned elsewhere."""
    owned = owned_partitions()
    values: list[dict[str, Any] | None] = []
    for partition, key in requests:
        if partition not in owned:
            raise LookupError(f"partition {partition} is not owned by this worker")
        entry = decode_entry(ledger_table.get(storage_key(partition, key)))
        values.append(None if entry is None else entry["v"])
    return values


def audit_owned_partitions() -> dict[int, tuple[PartitionMeta, AuditReport]]:
    """Audit each owned partition from a full scan of its entries (read without yielding: one consistent cut)."""
    owned = owned_partitions()
    metas: dict[int, PartitionMeta] = {p: PartitionMeta() for p in owned}
    segments: dict[int, list[tuple[str, Segment]]] = defaultdict(list)
    for raw_key, raw_entry in ledger_table.items():
        partition_text, _, key = raw_key.decode().partition("/")
        partition = int(partition_text)
        if partition not in owned:
            continue
        value = decode_entry(raw_entry)["v"]
        if key == META_KEY:
            metas[partition] = PartitionMeta.from_dict(value)
        elif key.startswith("s/"):
            segments[partition].append((key[2:], Segment.from_dict(value)))
    return {p: (metas[p], audit_partition(p, metas[p], segments[p])) for p in sorted(owned)}
