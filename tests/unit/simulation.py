"""An in-memory cluster for the pure ledger: partitions as lists of records, stores as dicts.

It lets a test choose the order in which partitions make progress and where a worker crashes (after some of a
batch's writes reached the store, before its relays were sent), which a real broker cannot do on demand.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from payments_app.codec import decode_entry, encode_entry
from payments_app.domain.commands import ClientTransaction, Command, MoveRequest, OpenAccount
from payments_app.domain.invariants import AuditReport, audit_ledger, audit_partition
from payments_app.domain.ledger import (
    META_KEY,
    BatchState,
    PartitionMeta,
    TxRecord,
    pending_relays,
    process_batch,
    segment_key,
    transaction_key,
)
from payments_app.domain.routing import CONCURRENT, decided_in
from payments_app.domain.segments import Segment, plan_equalization


@dataclass
class SimPartition:
    log: list[list[Command]] = field(default_factory=list)
    store: dict[str, bytes] = field(default_factory=dict)
    committed: int = 0  # the next offset to process


class SimCluster:
    def __init__(self, partitions: int, model: str = CONCURRENT) -> None:
        self.partitions = partitions
        self.model = model
        self.parts = [SimPartition() for _ in range(partitions)]

    def open(self, account: str) -> None:
        for part in self.parts:
            part.log.append([OpenAccount(account, "test")])

    def submit(self, command: ClientTransaction, partition: int | None = None) -> None:
        """Append a client transaction to the partition the model routes it to (or to `partition`)."""
        p = decided_in(command, self.partitions, self.model) if partition is None else partition
        self.parts[p].log.append([command])

    def pending(self) -> list[int]:
        return [p for p, part in enumerate(self.parts) if part.committed < len(part.log)]

    def step(self, p: int, crash_after_writes: int | None = None) -> None:
        """Process the next record of partition p alone; optionally crash after some of its writes."""
        self.step_group(p, 1, crash_after_writes)

    def step_group(self, p: int, records: int, crash_after_writes: int | None = None) -> int:
        """Apply up to `records` records of p as the agent's group does: each record's writes stored in turn,
        the relays of all sent at the end. With `crash_after_writes`, the last record of the group stores only
        that many of its writes and nothing is sent; the offset stays uncommitted. Returns records processed."""
        part = self.parts[p]
        relays: list[tuple[int, Command]] = []
        unsent = 0
        count = min(records, len(part.log) - part.committed)
        for n in range(count):
            offset = part.committed + n
            state = BatchState(lambda key: decode_entry(part.store.get(key)), offset)
            outcome = process_batch(state, p, self.partitions, offset, part.log[offset], self.model, unsent)
            writes = state.writes()
            if crash_after_writes is not None and n == count - 1:
                writes = writes[:crash_after_writes]
            for key, entry in writes:
                part.store[key] = encode_entry(entry)
            if outcome.outbox_slots is not None:
                unsent = outcome.outbox_slots
            relays.extend(outcome.relays)
        if crash_after_writes is None:
            self._deliver(relays)
            part.committed += count
        return count

    def restart(self, p: int) -> None:
        """A new owner's first record: it sends the stored outbox again before applying anything."""
        self._deliver(pending_relays(lambda key: decode_entry(self.parts[p].store.get(key)), self.meta(p)))

    def rebalance(self, account: str) -> None:
        """What the reconciler does for a short account: move requests that even out its segments."""
        balances = [s.balance for s in self.segments(account)]
        for source, destination, amount in plan_equalization(balances):
            self.parts[source].log.append([MoveRequest(account, amount, destination, None, None)])

    def take_over(self, p: int, records: int) -> None:
        """The owner stored a whole group and died before sending its relays; Faust committed past the records,
        so the new owner never replays them and instead resends the stored outbox when it takes over."""
        part = self.parts[p]
        processed = self.step_group(p, records, crash_after_writes=10**9)
        part.committed += processed
        self.restart(p)

    def meta(self, p: int) -> PartitionMeta:
        return PartitionMeta.from_dict(self.value(p, META_KEY) or PartitionMeta().to_dict())

    def _deliver(self, relays: list[tuple[int, Command]]) -> None:
        grouped: dict[int, list[Command]] = defaultdict(list)
        for dest, command in relays:
            grouped[dest].append(command)
        for dest, commands in grouped.items():
            self.parts[dest].log.append(commands)

    def rewind(self, p: int, records: int) -> None:
        """The committed offset lagged the changelog when the worker died: records are delivered again."""
        self.parts[p].committed = max(0, self.parts[p].committed - records)

    def run(self, rng: random.Random | None = None, crash_rate: float = 0.0, max_steps: int = 100_000) -> None:
        rng = rng or random.Random(0)
        for _ in range(max_steps):
            ready = self.pending()
            if not ready:
                return
            p = rng.choice(ready)
            roll = rng.random()
            group = rng.randint(1, 3)
            if roll < crash_rate / 3:
                self.step_group(p, group, crash_after_writes=rng.randint(0, 6))
                self.restart(p)
                if rng.random() < 0.5:
                    self.rewind(p, rng.randint(1, 3))
            elif roll < crash_rate * 2 / 3:
                self.take_over(p, group)
            elif roll < crash_rate:
                self.rewind(p, rng.randint(1, 3))
            else:
                self.step_group(p, group)
        raise AssertionError("the cluster did not become quiescent")

    def value(self, p: int, key: str) -> dict[str, Any] | None:
        entry = decode_entry(self.parts[p].store.get(key))
        return None if entry is None else entry["v"]

    def segments(self, account: str) -> list[Segment]:
        return [Segment.from_dict(v) for p in range(self.partitions) if (v := self.value(p, segment_key(account)))]

    def balance(self, account: str) -> int:
        return sum(s.balance for s in self.segments(account))

    def status(self, tx_id: str) -> TxRecord | None:
        """The transaction's record, wherever it was decided."""
        for p in range(self.partitions):
            raw = self.value(p, transaction_key(tx_id))
            if raw is not None:
                return TxRecord.from_dict(raw)
        return None

    def audit(self) -> AuditReport:
        per_partition = {}
        for p in range(self.partitions):
            meta = self.meta(p)
            segs = [
                (key[2:], Segment.from_dict(self.value(p, key))) for key in self.parts[p].store if key.startswith("s/")
            ]
            per_partition[p] = (meta, audit_partition(p, meta, segs))
        return audit_ledger(per_partition)
