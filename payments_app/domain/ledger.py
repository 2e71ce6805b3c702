"""Apply one batch of commands to one partition: apply, park or reject each, and say what to write and relay.

The runtime commits a group of records as one unit per partition (`payments_app/runtime/commit.py`): their
entries, their relays and the partition's meta reach the changelog together or not at all, and the local store
only ever holds a committed prefix of that changelog. So the state a record reads is exactly what the records
before it left, and one rule makes replays safe:

* The partition's meta entry carries the offset of the last record applied. A record at or below it is done,
  and applying it again changes nothing and relays nothing (its relays were committed with its writes).
* A batch may also come straight from a client at the partition's owner, not from the log (`offset` None); its
  transactions' ids make it safe to resend.
* Every batch applied gets the next number of the partition's sequence (`PartitionMeta.seq`, at least the
  record's offset). Relays carry an id (source partition, sequence number, index); a receiver drops one it has
  already applied.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from payments_app.domain.checks import InvariantViolation, require
from payments_app.domain.commands import (
    KIND_OF,
    ClientTransaction,
    Command,
    Deposit,
    ExpireReserved,
    MoveCredit,
    MoveRequest,
    Offer,
    OfferRequest,
    OpenAccount,
    PayeeCredit,
    PostReserved,
    RelayId,
    Reserve,
    Transfer,
    VoidReserved,
    Withdrawal,
)
from payments_app.domain.routing import BASELINE, decided_in, home_of, require_model
from payments_app.domain.segments import Parked, Round, Segment

PENDING, APPLIED, REJECTED = "pending", "applied", "rejected"
#: a reservation's statuses once decided: held, then paid out (in full or in part), given back, or timed out
RESERVED, POSTED, VOIDED, EXPIRED = "reserved", "posted", "voided", "expired"
RESERVATION = "reservation"
INSUFFICIENT_FUNDS, UNKNOWN_ACCOUNT, SAME_ACCOUNT = "insufficient_funds", "unknown_account", "same_account"
TOO_MANY_PENDING, MISROUTED = "too_many_pending", "misrouted"
REJECTION_REASONS = (INSUFFICIENT_FUNDS, UNKNOWN_ACCOUNT, SAME_ACCOUNT, TOO_MANY_PENDING, MISROUTED)
MAX_PARKED_PER_SEGMENT = 1_000  # bounds a segment's stored size (Kafka's record limit) and the wait behind it
META_KEY = "m"


def segment_key(account: str) -> str:
    return f"s/{account}"


def transaction_key(tx_id: str) -> str:
    return f"t/{tx_id}"


def expiry_key(expires_ms: int, tx_id: str) -> str:
    """A reservation's place among those its partition expires, in time order (kept while it is `reserved`)."""
    return f"{EXPIRY_PREFIX}{expires_ms:013d}/{tx_id}"


EXPIRY_PREFIX = "x/"


def history_prefix(account: str) -> str:
    """An account's history entries in a partition (ids hold no `/`, so one account's prefix is no other's)."""
    return f"h/{account}/"


def history_positions(decided_ms: int, partition: int, seq: int) -> Callable[[int], str]:
    """Where each history entry of one commit sorts among all of an account's entries, in every partition: by
    decision time, then partition, sequence number and (the argument) place in the commit. Fixed width, so text order is
    that order; also the cursor. The shared part is formatted once: this runs for every transfer, twice."""
    stem = f"{decided_ms:013d}.{partition:04d}.{seq:012d}."
    return lambda index: stem + str(index).zfill(5)


#: a transaction record's fields after id, kind, status and reason, in its row form, by kind
ROW_FIELDS: dict[str, tuple[str, ...]] = {
    "transfer": ("payer", "payee", "amount"),
    "deposit": ("account", "amount"),
    "withdrawal": ("account", "amount"),
    RESERVATION: ("payer", "payee", "amount", "timeout_s", "expires_ms", "posted"),
}
#: the fields a request sets, which a resubmission must repeat (a reservation's deadline and posted amount are not)
REQUEST_FIELDS: dict[str, tuple[str, ...]] = {**ROW_FIELDS, RESERVATION: ("payer", "payee", "amount", "timeout_s")}


def history_accounts(row: list[Any]) -> tuple[str, ...]:
    """The accounts whose history shows a decided transaction, from its row (read in every store for every
    decided row, so without building a record): both sides of an applied transfer, only the payer of a rejected
    one (it was the payer's request), the account of a deposit or withdrawal; a reservation's payer at each step,
    and its payee once posted."""
    if row[1] == "transfer":
        return (row[4],) if row[2] == REJECTED else (row[4], row[5])
    if row[1] == RESERVATION:
        return (row[4], row[5]) if row[2] == POSTED else (row[4],)
    return (row[4],)


@dataclass(slots=True)
class TxRecord:
    """A client transaction's details and its status, kept in the partition that decides it.

    Stored as a row, `[id, kind, status, reason, *fields]` (see ROW_FIELDS): a commit carries thousands of them,
    and a list is cheaper to build, encode and decode than a dict.
    """

    id: str
    kind: str
    status: str
    reason: str | None
    fields: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "status": self.status, "reason": self.reason, **self.fields}

    @classmethod
    def pending(cls, tx: ClientTransaction) -> TxRecord:
        """The record of a transaction not decided yet (an acknowledged submission, before its record is applied)."""
        kind = KIND_OF[type(tx)]
        fields = {name: getattr(tx, name) for name in REQUEST_FIELDS[kind]}
        if isinstance(tx, Reserve):
            fields["expires_ms"], fields["posted"] = tx.at_ms + tx.timeout_s * 1000, None
        return cls(tx.id, kind, PENDING, None, fields)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TxRecord:
        kind = data["kind"]
        return cls(data["id"], kind, data["status"], data["reason"], {name: data[name] for name in ROW_FIELDS[kind]})

    def same_request(self, tx: ClientTransaction) -> bool:
        """Whether `tx` asks for what this record holds (same kind and fields): a resubmission, not a conflict."""
        kind, fields = self.kind, self.fields
        return kind == KIND_OF[type(tx)] and all(getattr(tx, name) == fields[name] for name in REQUEST_FIELDS[kind])

    @property
    def decided(self) -> bool:
        return self.status != PENDING

    def seen_from(self, account: str, step: str | None = None) -> tuple[int, str | None]:
        """The transaction in `account`'s history: its signed amount (negative leaves the account) and the
        counterparty of a transfer. A reservation shows each `step` (the status it reached) on its own: the hold
        leaves the payer; a post pays the payee and gives the payer back what was not posted; a void or an expiry
        gives the payer everything back."""
        fields, amount = self.fields, self.fields["amount"]
        if self.kind == "deposit":
            return amount, None
        if self.kind == "withdrawal":
            return -amount, None
        payer, payee = fields["payer"], fields["payee"]
        if self.kind == RESERVATION and step in (POSTED, VOIDED, EXPIRED):
            if account == payee:
                return fields["posted"], payer
            return amount - (fields["posted"] or 0) if step == POSTED else amount, payee
        if payer == account:
            return -amount, payee
        return amount, payer

    @property
    def accounts(self) -> set[str]:
        """The accounts it moves money of: payer and payee, or the one account of a deposit or withdrawal."""
        if self.kind in ("transfer", RESERVATION):
            return {self.fields["payer"], self.fields["payee"]}
        return {self.fields["account"]}

    def to_row(self) -> list[Any]:
        fields = self.fields
        return [self.id, self.kind, self.status, self.reason, *[fields[name] for name in ROW_FIELDS[self.kind]]]

    @classmethod
    def from_row(cls, row: list[Any]) -> TxRecord:
        tx_id, kind, status, reason, *values = row
        return cls(tx_id, kind, status, reason, dict(zip(ROW_FIELDS[kind], values, strict=True)))


@dataclass(slots=True)
class PartitionMeta:
    """Per-partition totals for the audit, the last applied offset and batch, and the last relay seen from each
    source."""

    offset: int = -1  # of the transactions partition: the last record applied
    seq: int = -1  # the last batch applied, from the log or straight from a client
    deposits: int = 0
    withdrawals: int = 0
    moved_in: int = 0
    moved_out: int = 0
    credits_in: int = 0  # baseline: payee credits received from other partitions
    credits_out: int = 0  # baseline: payee credits relayed to other partitions
    next_round: int = 0
    relay_seen: dict[str, list[int]] = field(default_factory=dict)
    decided: int = 0  # client transactions applied or rejected here: each id counts once, ever
    reserved: int = 0  # held by this partition's open reservations (in its segments' `reserved`)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartitionMeta:
        meta = cls(**data)
        meta.relay_seen = {source: list(last) for source, last in meta.relay_seen.items()}
        return meta


Loader = Callable[[str], Any]  # an entry's decoded JSON: a dict, or a transaction's row; None if absent
_NOT_HELD: Any = object()  # not in the staged state yet: read it from the store


@dataclass(slots=True)
class Writes:
    """A partition's changes for one commit: entries in their stored form (JSON values), and the transaction
    records it created or decided, as of `seq`, the last batch applied."""

    entries: list[tuple[str, Any]]
    transactions: list[TxRecord]
    seq: int


class PartitionState:
    """A partition's entries as domain objects, as the records staged so far left them; kept for a whole session.

    `load` reads an entry the state does not hold from the committed store (its dict form, as the codec stores
    it). Every change goes through the `put_*` methods, which mark the entry dirty until `take_writes` hands the
    changed entries to a commit. Reading an entry again costs a dict lookup, not a store read and a decode: the
    accounts a partition touches stay here between records and groups, until `trim` lets them go.
    """

    def __init__(self, load: Loader) -> None:
        self.stored = load
        self._segments: dict[str, Segment | None] = {}
        self._transactions: dict[str, TxRecord | None] = {}
        self._meta: PartitionMeta | None = None
        self._dirty_segments: dict[str, None] = {}
        self._dirty_transactions: dict[str, None] = {}
        self._meta_dirty = False
        self._taken_seq = -1  # the `seq` of the last writes taken: each commit's must be past it

    def segment(self, account: str) -> Segment | None:
        segment = self._segments.get(account, _NOT_HELD)
        if segment is _NOT_HELD:
            raw = self.stored(segment_key(account))
            segment = self._segments[account] = None if raw is None else Segment.from_stored(raw)
        return segment  # type: ignore[return-value]

    def put_segment(self, account: str, segment: Segment) -> None:
        self._segments[account] = segment
        self._dirty_segments[account] = None

    def transaction(self, tx_id: str) -> TxRecord | None:
        """The id's record, or None for an id never seen: the duplicate check of every new transaction, so a
        miss is looked up without raising."""
        record = self._transactions.get(tx_id, _NOT_HELD)
        if record is _NOT_HELD:
            raw = self.stored(transaction_key(tx_id))
            record = self._transactions[tx_id] = None if raw is None else TxRecord.from_row(raw)
        return record  # type: ignore[return-value]

    def put_transaction(self, record: TxRecord) -> None:
        self._transactions[record.id] = record
        self._dirty_transactions[record.id] = None

    def meta(self) -> PartitionMeta:
        if self._meta is None:
            raw = self.stored(META_KEY)
            self._meta = PartitionMeta() if raw is None else PartitionMeta.from_dict(raw)
        return self._meta

    def put_meta(self, meta: PartitionMeta) -> None:
        self._meta = meta
        self._meta_dirty = True

    def take_writes(self) -> Writes:
        """What changed since the last call: segments and meta in their stored forms (meta last), transactions
        as records; clean again afterwards."""
        segments, transactions = self._segments, self._transactions
        entries: list[tuple[str, Any]] = [
            (segment_key(account), segments[account].to_stored())  # type: ignore[union-attr]
            for account in self._dirty_segments
        ]
        if self._meta_dirty and self._meta is not None:
            entries.append((META_KEY, self._meta.to_dict()))
        records = [transactions[tx_id] for tx_id in self._dirty_transactions]
        self._dirty_segments, self._dirty_transactions, self._meta_dirty = {}, {}, False
        seq = self.meta().seq
        if entries or records:  # the changelog keys a commit by its seq, and compaction keeps one record per key
            require(seq > self._taken_seq, f"writes at batch {seq} again (last taken at {self._taken_seq})")
            self._taken_seq = seq
        return Writes(entries, records, seq)  # type: ignore[arg-type]

    def trim(self, max_segments: int) -> None:
        """Let go of what the store holds anyway: every clean transaction record (an id is rarely read twice),
        and every clean segment once more than `max_segments` are held. Call it only when every entry taken by
        `take_writes` is in the store (between commits), since a dropped entry is read from the store again."""
        self._transactions = {tx_id: self._transactions[tx_id] for tx_id in self._dirty_transactions}
        if len(self._segments) > max_segments:
            self._segments = {account: self._segments[account] for account in self._dirty_segments}


@dataclass(slots=True)
class BatchOutcome:
    """What the runtime must do with the writes: commit these relays with them; and what happened, for metrics."""

    relays: list[tuple[int, Command]] = field(default_factory=list)
    replayed: bool = False
    applied: int = 0
    rejected: int = 0
    duplicates: int = 0
    moves: int = 0
    moved_amount: int = 0
    short_accounts: list[str] = field(default_factory=list)  # started a collection round: worth rebalancing


def process_batch(
    state: PartitionState, partition: int, partitions: int, offset: int | None, commands: Sequence[Command], model: str
) -> BatchOutcome:
    """Apply `commands`, read from `partition` at `offset` (None: submitted here by clients, not read from the
    log), to the staged state, by the rules of `model`."""
    meta = state.meta()
    if offset is not None and meta.offset >= offset:
        return BatchOutcome(replayed=True)
    meta.seq = meta.seq + 1 if offset is None else max(meta.seq + 1, offset)
    batch = _Batch(state, meta, partition, partitions, meta.seq, require_model(model))
    for command in commands:
        batch.handle(command)
    if offset is not None:
        meta.offset = offset
    state.put_meta(meta)
    return batch.outcome


class _Batch:
    """The decisions for one batch; short methods, one per command kind.

    The two models share every rule but two: the baseline never parks a debit (an account's money is all in
    its home partition, so there is nowhere to collect from), and it relays a transfer's credit to the payee's
    home instead of crediting the payee's segment here.
    """

    def __init__(
        self, state: PartitionState, meta: PartitionMeta, partition: int, partitions: int, seq: int, model: str
    ) -> None:
        self.state = state
        self.meta = meta
        self.partition = partition
        self.partitions = partitions
        self.seq = seq
        self.segmented = model != BASELINE
        self.outcome = BatchOutcome()

    def handle(self, command: Command) -> None:
        if isinstance(command, Transfer):
            self.transfer(command)
        elif isinstance(command, Deposit):
            self.deposit(command)
        elif isinstance(command, Withdrawal):
            self.withdrawal(command)
        elif isinstance(command, OfferRequest):
            self.offer_request(command)
        elif isinstance(command, Offer):
            self.offer(command)
        elif isinstance(command, MoveRequest):
            self.move_request(command)
        elif isinstance(command, MoveCredit):
            self.move_credit(command)
        elif isinstance(command, PayeeCredit):
            self.payee_credit(command)
        elif isinstance(command, OpenAccount):
            self.open_account(command)
        elif isinstance(command, Reserve):
            self.transfer(command)
        elif isinstance(command, PostReserved):
            self.post(command)
        elif isinstance(command, VoidReserved):
            self.void(command)
        elif isinstance(command, ExpireReserved):
            self.expire(command)
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
        self._debit_or_park(tx.account, segment, record, tx.amount, None)

    def transfer(self, tx: Transfer | Reserve) -> None:
        """A transfer, or a reservation: decided alike (at once, parked for a collection round, or rejected), but
        a reservation's money is held in the payer's segment here instead of reaching the payee (`_settle`)."""
        if self._is_duplicate(tx.id):
            return
        if isinstance(tx, Transfer):
            record = TxRecord(
                tx.id, "transfer", PENDING, None, {"payer": tx.payer, "payee": tx.payee, "amount": tx.amount}
            )
        else:
            record = TxRecord.pending(tx)
        if tx.payer == tx.payee:
            self._reject(record, SAME_ACCOUNT)
            return
        if self._misrouted(tx, record):
            return
        segment = self.state.segment(tx.payer)
        if segment is None or self.state.segment(tx.payee) is None:
            self._reject(record, UNKNOWN_ACCOUNT)
            return
        self._debit_or_park(tx.payer, segment, record, tx.amount, tx.payee)

    # a reservation's second phase: each applies to a reservation still `reserved`, and to nothing else (the
    # service answers a client from the record as it stands afterwards)

    def post(self, command: PostReserved) -> None:
        record = self._reserved(command.id)
        if record is None:
            return
        amount = record.fields["amount"]
        posted = amount if command.amount is None else command.amount
        if not 1 <= posted <= amount:
            return
        self._release(record, POSTED, kept=amount - posted)
        record.fields["posted"] = posted
        self._credit_payee(record.fields["payee"], posted, record)

    def void(self, command: VoidReserved) -> None:
        record = self._reserved(command.id)
        if record is not None:
            self._release(record, VOIDED, kept=record.fields["amount"])

    def expire(self, command: ExpireReserved) -> None:
        for tx_id in command.ids:
            record = self._reserved(tx_id)
            if record is not None and record.fields["expires_ms"] <= command.now_ms:
                self._release(record, EXPIRED, kept=record.fields["amount"])

    def _reserved(self, tx_id: str) -> TxRecord | None:
        record = self.state.transaction(tx_id)
        return record if record is not None and record.kind == RESERVATION and record.status == RESERVED else None

    def _release(self, record: TxRecord, status: str, kept: int) -> None:
        """End a reservation: its hold leaves the payer's segment here, `kept` of it back to the balance."""
        payer = record.fields["payer"]
        segment = self.state.segment(payer)
        if segment is None:
            raise InvariantViolation(f"the payer of {record!r} has no segment here")
        segment.release(record.fields["amount"], kept)
        self.meta.reserved -= record.fields["amount"]
        record.status = status
        self.state.put_transaction(record)
        self.state.put_segment(payer, segment)
        self._drain(payer, segment)

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

    def offer_request(self, request: OfferRequest) -> None:
        """Say what this segment could give (the move policy), moving nothing."""
        if self._seen_relay(request.relay):
            return
        _, give = self._could_give(request.account, request.amount)
        offer = Offer(request.account, give, self.partition, request.round, self._next_relay_id())
        self.outcome.relays.append((request.to, offer))

    def offer(self, offer: Offer) -> None:
        segment = self._relayed_to(offer.relay, offer.account)
        if segment is None:
            return
        round_ = segment.round
        if round_ is None or round_.id != offer.round or round_.moving:
            raise InvariantViolation(f"{offer!r} answers no round gathering offers: {round_!r}")
        round_.offers[offer.source] = offer.amount
        round_.awaiting -= 1
        self.state.put_segment(offer.account, segment)
        if round_.awaiting == 0:
            self._close_offers(offer.account, segment, round_)

    def move_request(self, request: MoveRequest) -> None:
        if self._seen_relay(request.relay):
            return
        segment, give = self._could_give(request.account, request.amount)
        if segment is not None and give > 0:
            segment.debit(give)
            segment.moved_out += give
            self.meta.moved_out += give
            self.state.put_segment(request.account, segment)
        if give > 0 or request.round is not None:
            credit = MoveCredit(request.account, give, self.partition, request.round, self._next_relay_id())
            self.outcome.relays.append((request.to, credit))

    def move_credit(self, credit: MoveCredit) -> None:
        segment = self._relayed_to(credit.relay, credit.account)
        if segment is None:
            return
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
        segment = self._relayed_to(credit.relay, credit.account)
        if segment is None:
            return
        segment.credit(credit.amount)
        self.meta.credits_in += credit.amount
        self.state.put_segment(credit.account, segment)
        self._drain(credit.account, segment)

    # the money moves

    def _debit_or_park(self, account: str, segment: Segment, record: TxRecord, amount: int, payee: str | None) -> None:
        """Pay `amount` from the segment at once, or queue it behind the segment's waiting debits (the
        Concurrent model), or refuse it. `payee` None is a withdrawal."""
        if segment.can_pay_now(amount):
            self.state.put_segment(account, segment)
            self._settle(segment, amount, payee, record)
            return
        if not self.segmented:
            self._reject(record, INSUFFICIENT_FUNDS)
            return
        if len(segment.parked) >= MAX_PARKED_PER_SEGMENT:
            self._reject(record, TOO_MANY_PENDING)
            return
        self.state.put_transaction(record)
        self.state.put_segment(account, segment)
        segment.parked.append(Parked(record.id, amount, payee, None))
        self._drain(account, segment)

    def _settle(self, segment: Segment, amount: int, payee: str | None, record: TxRecord) -> None:
        if record.status != PENDING:
            raise InvariantViolation(f"settling {amount} for {record!r}, which is decided")
        if record.kind == RESERVATION:
            segment.hold(amount)
            self.meta.reserved += amount
            self._apply(record, RESERVED)
            return
        segment.debit(amount)
        if payee is None:
            self.meta.withdrawals += amount
        else:
            self._credit_payee(payee, amount, record)
        self._apply(record)

    def _credit_payee(self, payee: str, amount: int, record: TxRecord) -> None:
        """The payee's side: its segment here, or in the baseline its home, by a relay."""
        if not self.segmented and home_of(payee, self.partitions) != self.partition:
            self.meta.credits_out += amount
            credit = PayeeCredit(payee, amount, record.id, self._next_relay_id())
            self.outcome.relays.append((home_of(payee, self.partitions), credit))
            return
        payee_segment = self.state.segment(payee)
        if payee_segment is None:
            raise InvariantViolation(f"payee of {record!r} has no segment here")
        payee_segment.credit(amount)
        self.state.put_segment(payee, payee_segment)

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
                self._settle(segment, head.amount, head.payee, self._record_of(head))
            elif segment.round is not None:
                return
            elif head.round is not None:
                self._refuse(segment.parked.pop(0))
            elif self._start_round(account, segment):
                return

    def _start_round(self, account: str, segment: Segment) -> bool:
        """Ask every other segment what it could give towards the shortfall. False when there is no other segment
        to ask."""
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
        for other in others:
            request = OfferRequest(account, shortfall, self.partition, round_id, self._next_relay_id())
            self.outcome.relays.append((other, request))
        return True

    def _close_offers(self, account: str, segment: Segment, round_: Round) -> None:
        """Every offer is in: refuse at once the round's debits that the balance and the offers cannot cover (in
        order), and ask the offering segments to move just what the others need, largest offer first."""
        available = segment.balance + sum(round_.offers.values())
        covered = 0
        waiting = []
        for debit in segment.parked:
            if debit.round == round_.id and covered + debit.amount > available:
                self._refuse(debit)
                continue
            if debit.round == round_.id:
                covered += debit.amount
            waiting.append(debit)
        segment.parked = waiting
        need = covered - segment.balance
        asks = []
        for source, offered in sorted(round_.offers.items(), key=lambda item: item[1], reverse=True):
            if need <= 0:
                break
            asks.append((source, min(offered, need)))
            need -= offered
        round_.moving, round_.offers, round_.awaiting = True, {}, len(asks)
        for source, amount in asks:
            self.outcome.relays.append((source, MoveRequest(account, amount, self.partition, round_.id,
                                                            self._next_relay_id())))  # fmt: skip
        if asks:
            self.outcome.short_accounts.append(account)
        self._drain(account, segment)

    # bookkeeping

    def _refuse(self, debit: Parked) -> None:
        """A parked debit its round could not cover (already taken off the queue)."""
        self._reject(self._record_of(debit), INSUFFICIENT_FUNDS)

    def _record_of(self, debit: Parked) -> TxRecord:
        record = self.state.transaction(debit.tx_id)
        if record is None:
            raise InvariantViolation(f"parked debit {debit!r} has no record")
        return record

    def _is_duplicate(self, tx_id: str) -> bool:
        if self.state.transaction(tx_id) is not None:
            self.outcome.duplicates += 1
            return True
        return False

    def _apply(self, record: TxRecord, status: str = APPLIED) -> None:
        record.status = status
        self.state.put_transaction(record)
        self.outcome.applied += 1
        self.meta.decided += 1

    def _reject(self, record: TxRecord, reason: str) -> None:
        record.status, record.reason = REJECTED, reason
        self.state.put_transaction(record)
        self.outcome.rejected += 1
        self.meta.decided += 1

    def _misrouted(self, tx: ClientTransaction, record: TxRecord) -> bool:
        """The baseline keeps an account's money in its home only: a transaction sent elsewhere is refused."""
        if self.segmented or decided_in(tx, self.partitions, BASELINE) == self.partition:
            return False
        self._reject(record, MISROUTED)
        return True

    def _could_give(self, account: str, amount: int) -> tuple[Segment | None, int]:
        """The account's segment here, and what the move policy lets it give of `amount`."""
        segment = self.state.segment(account)
        return segment, segment.amount_to_give(amount) if segment is not None and self.segmented else 0

    def _relayed_to(self, relay: RelayId | None, account: str) -> Segment | None:
        """The segment a relay credits or answers; None when the relay was applied before (a replay)."""
        if self._seen_relay(relay):
            return None
        segment = self.state.segment(account)
        if segment is None:
            raise InvariantViolation(f"a relay for {account!r}, which has no segment here")
        return segment

    def _seen_relay(self, relay: RelayId | None) -> bool:
        """Drop a relay already applied; relays from one source arrive in the order they were made."""
        if relay is None:
            return False
        source, seq, index = relay
        last = self.meta.relay_seen.get(str(source))
        if last is not None and (seq, index) <= (last[0], last[1]):
            return True
        self.meta.relay_seen[str(source)] = [seq, index]
        return False

    def _next_relay_id(self) -> RelayId:
        return (self.partition, self.seq, len(self.outcome.relays))
