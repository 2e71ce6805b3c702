"""Reads of this worker's own partitions of the ledger, for web views and the reconciler.

Only the ledger agent writes; everything here reads the local stores of partitions whose session is open (so
the store holds that partition's committed state, as of the last group this worker committed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Any

from payments_app.domain.invariants import AuditReport, PartitionAudit
from payments_app.domain.ledger import (
    EXPIRY_PREFIX,
    META_KEY,
    PartitionMeta,
    TxRecord,
    expiry_key,
    history_prefix,
    segment_key,
    transaction_key,
)
from payments_app.runtime.lease import GroupLease
from payments_app.runtime.sessions import LedgerSessions
from payments_app.service.errors import NotOwner
from tables.codec import decode_entries, decode_entry
from tables.ledger import PartitionStore, storage_key

#: segments an audit reads between turns of the event loop (a few milliseconds' work)
AUDIT_CHUNK = 2_000


class LocalReads:
    """Reads of the partitions open on this worker. `sessions` holds them; the `lease` says whether the group still
    counts this worker a member; `owned()` is what the group assigned here now, and `rebalancing()` whether a
    rebalance is under way."""

    def __init__(
        self,
        sessions: LedgerSessions,
        lease: GroupLease,
        owned: Callable[[], set[int]],
        rebalancing: Callable[[], bool],
    ) -> None:
        self.sessions = sessions
        self.lease = lease
        self.owned = owned
        self.rebalancing = rebalancing

    def is_ready(self) -> bool:
        """True once the group has given the worker an assignment, every assigned partition's session is open, and the
        group is sure to count this worker a member (`runtime.lease`)."""
        assigned = self.sessions.assigned()
        return (
            self.sessions.assignment_known
            and self.lease.held()
            and not self.rebalancing()
            and assigned == self.owned()
            and self.sessions.open_partitions() == assigned
        )

    def _store(self, partition: int) -> PartitionStore:
        store = self.sessions.store(partition)
        if store is None:
            raise NotOwner(f"partition {partition} is not open on this worker")
        if not self.lease.held():
            raise NotOwner(f"partition {partition}: this worker has not heard from the group lately; it may be stale")
        return store

    def stored_value(self, partition: int, key: str) -> dict[str, Any] | None:
        """A ledger value of a partition open here."""
        return decode_entry(self._store(partition).get(storage_key(partition, key)))

    def last_meta(self, partition: int) -> PartitionMeta | None:
        """The partition's meta as this worker's last committed group left it (lease or not: progress reports it);
        None before its first record, or if the partition is not open here."""
        store = self.sessions.store(partition)
        return None if store is None else self.meta_of(store.get(storage_key(partition, META_KEY)))

    @staticmethod
    def meta_of(raw: bytes | None) -> PartitionMeta | None:
        value = decode_entry(raw)
        return None if value is None else PartitionMeta.from_dict(value)

    def applied_offsets(self) -> dict[int, int]:
        """The last offset applied in each partition open here, as its committed meta says (-1: none yet)."""
        applied = {}
        for partition in self.sessions.open_partitions():
            meta = self.last_meta(partition)
            applied[partition] = -1 if meta is None else meta.offset
        return applied

    def read_values(self, requests: list[tuple[int, str]]) -> list[dict[str, Any] | None]:
        """Current values of ledger keys in partitions open here; raises NotOwner for any other partition."""
        return [self.stored_value(partition, key) for partition, key in requests]

    def account_history(self, partition: int, account: str, before: str | None, limit: int) -> list[list[Any]]:
        """An account's decided transactions in a partition open here, newest first, positioned before `before`:
        `[position, [id, kind, signed amount, counterparty, status, reason, decided ms]]` (see
        `codec.transaction_entries`)."""
        store = self._store(partition)
        prefix = storage_key(partition, history_prefix(account))
        page = []
        for key, shown in store.scan_back(prefix, None if before is None else before.encode(), limit):
            position = key[len(prefix) :].decode()
            tx_id, _, step = shown.decode().partition(" ")  # a reservation's entries name the step they show
            record = TxRecord.from_row(decode_entry(store.get(storage_key(partition, transaction_key(tx_id)))))
            amount, counterparty = record.seen_from(account, step or None)
            decided_ms = int(position.partition(".")[0])
            status = step or record.status
            page.append([position, [record.id, record.kind, amount, counterparty, status, record.reason, decided_ms]])
        return page

    def due_reservations(self, partition: int, now_ms: int, limit: int) -> list[str]:
        """Up to `limit` reservations of a partition open here that are still reserved at `now_ms`, past their
        deadline, oldest deadline first (their expiry entries, `codec.transaction_entries`)."""
        prefix, last = storage_key(partition, EXPIRY_PREFIX), storage_key(partition, expiry_key(now_ms, "~"))
        due = []
        for key, tx_id in self._store(partition).view().scan(prefix):
            if key > last or len(due) == limit:
                break
            due.append(tx_id.decode())
        return due

    async def audit_owned_partitions(self) -> dict[int, tuple[PartitionMeta, AuditReport]]:
        """Audit each open partition from a scan of its meta and segments.

        Each partition is read through one consistent view (`PartitionStore.view`), so the agent goes on applying
        while the scan yields to the event loop every `AUDIT_CHUNK` segments: a million segments take seconds to
        read, and heartbeats, requests and commits must not wait for them.
        """
        reports: dict[int, tuple[PartitionMeta, AuditReport]] = {}
        for partition in sorted(self.sessions.open_partitions()):
            try:
                view = self._store(partition).view()
            except NotOwner:
                continue  # closed meanwhile, or the lease ran out: the audit says which partitions nobody answered for
            meta = self.meta_of(view.get(storage_key(partition, META_KEY))) or PartitionMeta()
            audit = PartitionAudit(partition, meta)
            prefix = storage_key(partition, segment_key(""))
            segments = view.scan(prefix)
            while chunk := list(islice(segments, AUDIT_CHUNK)):
                keys, raws = zip(*chunk, strict=True)
                audit.add_stored(decode_entries(raws), _accounts_of(keys, len(prefix)))
                await asyncio.sleep(0)
            reports[partition] = (meta, audit.finish())
            await asyncio.sleep(0)
        return reports


def _accounts_of(keys: Sequence[bytes], skip: int) -> Callable[[int], str]:
    """The account of the segment at an index of `keys` (named only in an audit's problem)."""
    return lambda index: keys[index][skip:].decode()
