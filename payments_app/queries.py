"""Reads of this worker's own partitions of the ledger table, for web views and the reconciler.

Only agents write tables; everything here only reads, and only partitions this worker actively owns.
"""

from __future__ import annotations

import asyncio
from typing import Any

from payments_app.app import app
from payments_app.codec import decode_entry
from payments_app.domain.invariants import AuditReport, audit_partition
from payments_app.domain.ledger import META_KEY, PartitionMeta, segment_key
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


def stored_entry(partition: int, key: str) -> dict[str, Any] | None:
    """A ledger entry (`{o, v, pv}`) of a partition held here, as stored."""
    return decode_entry(ledger_table.read(partition, storage_key(partition, key)))


def last_meta(partition: int) -> PartitionMeta | None:
    """The partition's meta as its last done record left it; None before its first record."""
    entry = stored_entry(partition, META_KEY)
    return None if entry is None else PartitionMeta.from_dict(entry["v"])


def read_values(requests: list[tuple[int, str]]) -> list[dict[str, Any] | None]:
    """Current values of ledger keys in partitions owned here; raises LookupError for one owned elsewhere."""
    owned = owned_partitions()
    values: list[dict[str, Any] | None] = []
    for partition, key in requests:
        if partition not in owned:
            raise LookupError(f"partition {partition} is not owned by this worker")
        entry = stored_entry(partition, key)
        values.append(None if entry is None else entry["v"])
    return values


async def audit_owned_partitions() -> dict[int, tuple[PartitionMeta, AuditReport]]:
    """Audit each owned partition from a scan of its meta and segments.

    One partition is read without yielding (one consistent cut: the agent cannot write in between); the event
    loop gets a turn between partitions, so heartbeats and requests go on during a long audit.
    """
    reports: dict[int, tuple[PartitionMeta, AuditReport]] = {}
    for partition in sorted(owned_partitions()):
        meta = last_meta(partition) or PartitionMeta()
        prefix = storage_key(partition, segment_key(""))
        segments = [
            (key[len(prefix) :].decode(), Segment.from_dict(decode_entry(raw)["v"]))
            for key, raw in ledger_table.scan(partition, prefix)
        ]
        reports[partition] = (meta, audit_partition(partition, meta, segments))
        await asyncio.sleep(0)
    return reports
