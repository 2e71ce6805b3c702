"""Apply one batch of commands to one partition: apply, park or reject each, and say what to write and relay.

Crash safety comes from two rules, both checked here rather than trusted to Kafka:

* Every stored entry is `{"o": source offset that wrote it, "v": value, "pv": value before that offset}`.
  When a record is replayed after a crash, entries it already wrote are read as their `pv`, so the batch is
  recomputed from exactly the state it first saw, and gives the same decisions, writes and relays.
* The partition's meta entry is written last in every batch and carries the batch's offset. A record at or
  below that offset is done.
* Relays are sent after the writes of a whole group of records are durable, so each record that makes relays
  stores them in the next outbox slot (`o/0`, `o/1`, ...), and meta counts the slots whose relays may not have
  been sent yet. After a crash, or when the last done record is replayed, every counted slot is sent again.
  Receivers drop relays they have seen (by relay id), so sending twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from payments_app.domain.commands import (
    ClientTransaction,
    Command,
    Deposit,
    MoveCredit,
    MoveRequest,
    OpenAccount,
    PayeeCredit,
    RelayId,
    Transfer,
    Withdrawal,
    from_dict,
    to_dict,
)
from payments_app.domain.routing import BASELINE, decided_in, home_of, require_model
from payments_app.domain.segments import Parked, Round, Segment

PENDING, APPLIED, REJECTED = "pending", "applied", "rejected"
INSUFFICIENT_FUNDS, UNKNOWN_ACCOUNT, SAME_ACCOUNT = "insufficient_funds", "unknown_account", "same_account"
TOO_MANY_PENDING, MISROUTED = "too_many_pending", "misrouted"
REJECTION_REASONS = (INSUFFICIENT_FUNDS, UNKNOWN_ACCOUNT, SAME_ACCOUNT, TOO_MANY_PENDING, MISROUTED)
MAX_PARKED_PER_SEGMENT = 1_000  # bounds a segment's stored size (Kafka's record limit) and the wait behind it
META_KEY = "m"


def segment_key(account: str) -> str:
    return f"s/{account}"


def transaction_key(tx_id: str) -> str:
    return f"t/{tx_id}"


def outbox_key(slot: int) -> str:
    return f"o/{slot}"


@dataclass(slots=True)
class TxRecord:
    """A client transaction's details and its status, kept in the partition that decides it."""

    id: str
    kind: str
    status: str
    reason: str | None
    fields: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "status": self.status, "reason": self.reason, **self.fields}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TxRecord:
        rest = {k: v for k, v in data.items() if k not in ("id", "kind", "status", "reason")}
        return cls(data["id"], data["kind"], data["status"], data["reason"], rest)


@dataclass(slots=True)
class PartitionMeta:
    """Per-partition totals for the audit, the replay checkpoint, and how many outbox slots await sending."""

    offset: int = -1
    deposits: int = 0
    withdrawals: int = 0
    moved_in: int = 0
    moved_out: int = 0
    credits_in: int = 0  # baseline: payee credits received from other partitions
    credits_out: int = 0  # baseline: payee credits relayed to other partitions
    next_round: int = 0
    relay_seen: dict[str, list[int]] = field(default_factory=dict)
    outbox_slots: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartitionMeta:
        meta = cls(**data)
        meta.relay_seen = {source: list(last) for source, last in meta.relay_seen.items()}
        return meta


@dataclass(slots=True)
class OutboxSlot:
    """The relays one record made, kept until the group of records it belongs to has sent them."""

    offset: int
    relays: list[list[Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "relays": self.relays}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutboxSlot:
        return cls(data["offset"], data["relays"])


Loader = Callable[[str], dict[str, Any] | None]


class BatchState:
    """The state one batch reads and writes, staged in memory; each touched entry is written once."""

    def __init__(self, load: Loader, offset: int) -> None:
        self.stored = load
        self._offset = offset
        self._before: dict[str, Any] = {}
        self._objects: dict[str, Any] = {}
        self._dirty: dict[str, None] = {}

    def _read(self, key: str) -> Any:
        if key not in self._before:
            entry = self.stored(key)
            if entry is None:
                value = None
            elif key == META_KEY:
                value = entry["v"]  # written last in a batch: at or past this offset, this record is done
            elif entry["o"] == self._offset:
                value = entry["pv"]  # this very record wrote it before a crash: start from what it saw
            else:
                # Writes reach the changelog in order and meta comes last in each batch, so while this
                # record is not done no entry can hold a later record's write.
                assert entry["o"] < self._offset, (key, entry["o"], self._offset)
                value = entry["v"]
            self._before[key] = value
        return self._before[key]

    def segment(self, account: str) -> Segment | None:
        key = segment_key(account)
        if key not in self._objects:
            raw = self._read(key)
            self._objects[key] = None if raw is None else Segment.from_dict(raw)
        return self._objects[key]

    def _put(self, key: str, value: Any) -> None:
        self._read(key)  # remember the value before this batch, for the entry's `pv`
        self._objects[key] = value
        self._dirty[key] = None

    def put_segment(self, account: str, segment: Segment) -> None:
        self._put(segment_key(account), segment)

    def transaction(self, tx_id: str) -> TxRecord | None:
        key = transaction_key(tx_id)
        if key not in self._objects:
            raw = self._read(key)
            self._objects[key] = None if raw is None else TxRecord.from_dict(raw)
        return self._objects[key]

    def put_transaction(self, record: TxRecord) -> None:
        self._put(transaction_key(record.id), record)

    def meta(self) -> PartitionMeta:
        if META_KEY not in self._objects:
            raw = self._read(META_KEY)
            self._objects[META_KEY] = PartitionMeta() if raw is None else PartitionMeta.from_dict(raw)
        return self._objects[META_KEY]

    def put_outbox(self, slot: int, record: OutboxSlot) -> None:
        self._put(outbox_key(slot), record)

    def put_meta(self, meta: PartitionMeta) -> None:
        self._put(META_KEY, meta)

    def writes(self) -> list[tuple[str, dict[str, Any]]]:
        """Entries to store, meta last, each with the offset that wrote it and the value it replaced."""
        keys = [k for k in self._dirty if k != META_KEY]
        if META_KEY in self._dirty:
            keys.append(META_KEY)
        return [(key, {"o": self._offset, "v": self._objects[key].to_dict(), "pv": self._before[key]}) for key in keys]


@dataclass(slots=True)
class BatchOutcome:
    """What the agent must do after storing the writes: send these relays; and what happened, for metrics."""

    relays: list[tuple[int, Command]] = field(default_factory=list)
    outbox_slots: int | None = None  # slots now awaiting sending (None: the record was older than the last done)
    replayed: bool = False
    applied: int = 0
    rejected: int = 0
    duplicates: int = 0
    moves: int = 0
    moved_amount: int = 0
    short_accounts: list[str] = field(default_factory=list)  # started a collection round: worth rebalancing


def pending_relays(load: Loader, meta: PartitionMeta) -> list[tuple[int, Command]]:
    """The relays of every counted outbox slot, in the order they were made, to send again after a crash.

    `load` reads stored entries; slots are read as stored, since every record that wrote them is done.
    """
    relays: list[tuple[int, Command]] = []
    for slot in range(meta.outbox_slots):
        entry = load(outbox_key(slot))
        assert entry is not None, f"outbox slot {slot} of {meta.outbox_slots} is missing"
        relays.extend((dest, from_dict(cmd)) for dest, cmd in OutboxSlot.from_dict(entry["v"]).relays)
    return relays


def process_batch(
    state: BatchState,
    partition: int,
    partitions: int,
    offset: int,
    commands: Sequence[Command],
    model: str,
    unsent_slots: int = 0,
) -> BatchOutcome:
    """Apply `commands`, read from `partition` at `offset`, to the staged state, by the rules of `model`.

    `unsent_slots` is how many outbox slots earlier records of the current group filled: their relays are not
    sent yet, so this record's relays go into the next slot and meta keeps counting all of them.
    """
    meta = state.meta()
    if meta.offset >= offset:
        outcome = BatchOutcome(replayed=True)
        if meta.offset == offset:
            outcome.relays = pending_relays(state.stored, meta)
            outcome.outbox_slots = meta.outbox_slots
        return outcome
    batch = _Batch(state, meta, partition, partitions, offset, require_model(model))
    for command in commands:
        batch.handle(command)
    meta.offset = offset
    meta.outbox_slots = unsent_slots
    if batch.outcome.relays:
        relays = [[dest, to_dict(cmd)] for dest, cmd in batch.outcome.relays]
        state.put_outbox(unsent_slots, OutboxSlot(offset, relays))
        meta.outbox_slots += 1
    batch.outcome.outbox_slots = meta.outbox_slots
    state.put_meta(meta)
    return batch.outcome


class _Batch:
    """The decisions for one batch; short methods, one per command kind.

    The two models share every rule but two: the baseline never parks a debit (an account's money is all in
    its home partition, so there is nowhere to collect from), and it relays a transfer's credit to the payee's
    home instead of crediting the payee's segment here.
    """

    def __init__(
        self, state: BatchState, meta: PartitionMeta, partition: int, partitions: int, offset: int, model: str
    ) -> None:
        self.state = state
        self.meta = meta
        self.partition = partition
        self.partitions = partitions
        self.offset = offset
        self.segmented = model != BASELINE
        self.outcome = BatchOutcome()

    def handle(self, command: Command) -> None:
        if isinstance(command, Transfer):
            self.transfer(command)
        elif isinstance(command, Deposit):
            self.deposit(command)
        elif isinstance(command, Withdrawal):
            self.withdrawal(command)
        elif isinstance(command, MoveRequest):
            self.move_request(command)
        elif isinstance(command, MoveCredit):
            self.move_credit(command)
        elif isinstance(command, PayeeCredit):
            self.payee_credit(command)
        elif isinstance(command, OpenAccount):
            self.open_account(command)
        else:
            raise TypeError(f"unknown command {command!r}")

    # client transactions

    def open_account(self, command: OpenAccount) -> None:
        if self.state.segment(command.account) is None:
            home = home_of(command.account, self.partitions) == self.partition
            self.state.put_segment(command.account, Segment(opened_by=command.request if home else None))

    def deposit(self, tx: Deposit) -> None:
        admitted = self._admit_one_account(tx, "deposit")
        if admitted is None:
            return
        record, segment = admitted
        segment.credit(tx.amount)
        self.meta.deposits += tx.amount
        self._apply(record)
        self.state.put_segment(tx.account, segment)
        self._drain(tx.account, segment)

    def withdrawal(self, tx: Withdrawal) -> None:
        admitted = self._admit_one_account(tx, "withdrawal")
        if admitted is None:
            return
        record, segment = admitted
        self._debit_or_park(tx.account, segment, record, Parked(tx.id, tx.amount, None, None))

    def transfer(self, tx: Transfer) -> None:
        if self._is_duplicate(tx.id):
            return
        fields = {"payer": tx.payer, "payee": tx.payee, "amount": tx.amount}
        record = TxRecord(tx.id, "transfer", PENDING, None, fields)
        if tx.payer == tx.payee:
            self._reject(record, SAME_ACCOUNT)
            return
        if self._misrouted(tx, record):
            return
        segment = self.state.segment(tx.payer)
        if segment is None or self.state.segment(tx.payee) is None:
            self._reject(record, UNKNOWN_ACCOUNT)
            return
        self._debit_or_park(tx.payer, segment, record, Parked(tx.id, tx.amount, tx.payee, None))

    def _admit_one_account(self, tx: Deposit | Withdrawal, kind: str) -> tuple[TxRecord, Segment] | None:
        """The record and segment of a deposit or withdrawal that goes ahead; None when it is settled here."""
        if self._is_duplicate(tx.id):
            return None
        record = TxRecord(tx.id, kind, PENDING, None, {"account": tx.account, "amount": tx.amount})
        if self._misrouted(tx, record):
            return None
        segment = self.state.segment(tx.account)
        if segment is None:
            self._reject(record, UNKNOWN_ACCOUNT)
            return None
        return record, segment

    # relays between segments

    def move_request(self, request: MoveRequest) -> None:
        if self._seen_relay(request.relay):
            return
        segment = self.state.segment(request.account)
        give = segment.amount_to_give(request.amount) if segment is not None and self.segmented else 0
        if segment is not None and give > 0:
            segment.debit(give)
            segment.moved_out += give
            self.meta.moved_out += give
            self.state.put_segment(request.account, segment)
        if give > 0 or request.round is not None:
            credit = MoveCredit(request.account, give, self.partition, request.round, self._next_relay_id())
            self.outcome.relays.append((request.to, credit))

    def move_credit(self, credit: MoveCredit) -> None:
        if self._seen_relay(credit.relay):
            return
        segment = self.state.segment(credit.account)
        assert segment is not None, f"credit for {credit.account!r}, which has no segment here"
        segment.credit(credit.amount)
        segment.moved_in += credit.amount
        self.meta.moved_in += credit.amount
        if credit.amount:
            self.outcome.moves += 1
            self.outcome.moved_amount += credit.amount
        if segment.round is not None and segment.round.id == credit.round:
            segment.round.awaiting -= 1
        self.state.put_segment(credit.account, segment)
        self._drain(credit.account, segment)

    def payee_credit(self, credit: PayeeCredit) -> None:
        if self._seen_relay(credit.relay):
            return
        segment = self.state.segment(credit.account)
        assert segment is not None, f"credit for {credit.account!r}, which has no segment here"
        segment.credit(credit.amount)
        self.meta.credits_in += credit.amount
        self.state.put_segment(credit.account, segment)
        self._drain(credit.account, segment)

    # the money moves

    def _debit_or_park(self, account: str, segment: Segment, record: TxRecord, debit: Parked) -> None:
        self.state.put_transaction(record)
        self.state.put_segment(account, segment)
        if segment.can_pay_now(debit.amount):
            self._settle(segment, debit)
            return
        if not self.segmented:
            self._reject(record, INSUFFICIENT_FUNDS)
            return
        if len(segment.parked) >= MAX_PARKED_PER_SEGMENT:
            self._reject(record, TOO_MANY_PENDING)
            return
        segment.parked.append(debit)
        self._drain(account, segment)

    def _settle(self, segment: Segment, debit: Parked) -> None:
        segment.debit(debit.amount)
        if debit.payee is None:
            self.meta.withdrawals += debit.amount
        elif not self.segmented and home_of(debit.payee, self.partitions) != self.partition:
            self.meta.credits_out += debit.amount
            credit = PayeeCredit(debit.payee, debit.amount, debit.tx_id, self._next_relay_id())
            self.outcome.relays.append((home_of(debit.payee, self.partitions), credit))
        else:
            payee = self.state.segment(debit.payee)
            assert payee is not None, debit
            payee.credit(debit.amount)
            self.state.put_segment(debit.payee, payee)
        record = self.state.transaction(debit.tx_id)
        assert record is not None and record.status == PENDING, (debit, record)
        self._apply(record)

    def _drain(self, account: str, segment: Segment) -> None:
        """Apply parked debits in order while they fit; reject those whose round closed short."""
        while True:
            if segment.round is not None and segment.round.awaiting == 0:
                segment.round = None
            if not segment.parked:
                return
            head = segment.parked[0]
            if head.amount <= segment.balance:
                segment.parked.pop(0)
                self._settle(segment, head)
            elif segment.round is not None:
                return
            elif head.round is not None:
                segment.parked.pop(0)
                record = self.state.transaction(head.tx_id)
                assert record is not None, head
                self._reject(record, INSUFFICIENT_FUNDS)
            elif self._start_round(account, segment):
                return

    def _start_round(self, account: str, segment: Segment) -> bool:
        """Ask every other segment for the shortfall. False when there is no other segment to ask."""
        round_id = self.meta.next_round
        self.meta.next_round += 1
        for debit in segment.parked:
            if debit.round is None:
                debit.round = round_id
        others = [p for p in range(self.partitions) if p != self.partition]
        if not others:
            return False
        shortfall = segment.shortfall()
        segment.round = Round(round_id, len(others))
        self.outcome.short_accounts.append(account)
        for other in others:
            request = MoveRequest(account, shortfall, self.partition, round_id, self._next_relay_id())
            self.outcome.relays.append((other, request))
        return True

    # bookkeeping

    def _is_duplicate(self, tx_id: str) -> bool:
        if self.state.transaction(tx_id) is not None:
            self.outcome.duplicates += 1
            return True
        return False

    def _apply(self, record: TxRecord) -> None:
        record.status = APPLIED
        self.state.put_transaction(record)
        self.outcome.applied += 1

    def _reject(self, record: TxRecord, reason: str) -> None:
        record.status, record.reason = REJECTED, reason
        self.state.put_transaction(record)
        self.outcome.rejected += 1

    def _misrouted(self, tx: ClientTransaction, record: TxRecord) -> bool:
        """The baseline keeps an account's money in its home only: a transaction sent elsewhere is refused."""
        if self.segmented or decided_in(tx, self.partitions, BASELINE) == self.partition:
            return False
        self._reject(record, MISROUTED)
        return True

    def _seen_relay(self, relay: RelayId | None) -> bool:
        """Drop a relay already applied; relays from one source arrive in the order they were made."""
        if relay is None:
            return False
        source, offset, index = relay
        last = self.meta.relay_seen.get(str(source))
        if last is not None and (offset, index) <= (last[0], last[1]):
            return True
        self.meta.relay_seen[str(source)] = [offset, index]
        return False

    def _next_relay_id(self) -> RelayId:
        return (self.partition, self.offset, len(self.outcome.relays))
