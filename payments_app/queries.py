"""Reads of this worker's own partitions of the ledger, for web views and the reconciler.

Only the ledger agent writes; everything here reads the local stores of partitions whose session is open (so
the store holds that partition's committed state, as of the last group this worker committed).
"""

from __future__ import annotations

import asyncio
from typing import Any

from payments_app.app import app
from payments_app.codec import decode_entry
from payments_app.domain.invariants import AuditReport, audit_partition
from payments_app.domain.ledger import META_KEY, PartitionMeta, segment_key
from payments_app.domain.segments import Segment
from payments_app.runtime.wiring import LEDGER, owned_partitions
from tables.ledger import PartitionStore, storage_key


def is_ready() -> bool:
    """True once the group has given the worker an assignment and every assigned partition's session is open."""
    assigned = LEDGER.assigned()
    return (
        LEDGER.assignment_known
        and not app.rebalancing
        and assigned == owned_partitions()
        and LEDGER.open_partitions() == assigned
    )


def _store(partition: int) -> PartitionStore:
    store = LEDGER.store(partition)
    if store is None:
        raise LookupError(f"partition {partition} is not open on this worker")
    return store


def stored_value(partition: int, key: str) -> dict[str, Any] | None:
    """A ledger value of a partition open here."""
    return decode_entry(_store(partition).get(storage_key(partition, key)))


def last_meta(partition: int) -> PartitionMeta | None:
    """The partition's meta as its last committed group left it; None before its first record."""
    value = stored_value(partition, META_KEY)
    return None if value is None else PartitionMeta.from_dict(value)


def applied_offsets() -> dict[int, int]:
    """The last offset applied in each partition open here, as its committed meta says (-1: none yet)."""
    applied = {}
    for partition in LEDGER.open_partitions():
        meta = last_meta(partition)
        applied[partition] = -1 if meta is None else meta.offset
    return applied


def read_values(requests: list[tuple[int, str]]) -> list[dict[str, Any] | None]:
    """Current values of ledger keys in partitions open here; raises LookupError for any other partition."""
    return [stored_value(partition, key) for partition, key in requests]


async def audit_owned_partitions() -> dict[int, tuple[PartitionMeta, AuditReport]]:
    """Audit each open partition from a scan of its meta and segments.

    One partition is read without yielding (one consistent cut: the agent cannot write in between); the event
    loop gets a turn between partitions, so heartbeats and requests go on during a long audit.
    """
    reports: dict[int, tuple[PartitionMeta, AuditReport]] = {}
    for partition in sorted(LEDGER.open_partitions()):
        store = _store(partition)
        meta = last_meta(partition) or PartitionMeta()
        prefix = storage_key(partition, segment_key(""))
        segments = [
            (key[len(prefix) :].decode(), Segment.from_dict(decode_entry(raw))) for key, raw in store.scan(prefix)
        ]
        reports[partition] = (meta, audit_partition(partition, meta, segments))
        await asyncio.sleep(0)
    return reports
