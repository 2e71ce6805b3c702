"""What flows through a partition of the transactions topic: client transactions and the relays between segments.

Every command is a small frozen dataclass with a plain-dict form for the wire (the codec turns lists of these
dicts into bytes). Relays carry a `relay` id, `(source partition, the source's batch number, index)`, so the receiving
partition recognises one it has already applied when the sender replays after a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

RelayId = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class OpenAccount:
    """Create the account's segment in this partition (sent to every partition).

    `request` names the HTTP request that asked; the account's home partition keeps it, so that of two
    concurrent requests for one id exactly one learns it created the account.
    """

    account: str
    request: str


@dataclass(frozen=True, slots=True)
class Deposit:
    id: str
    account: str
    amount: int


@dataclass(frozen=True, slots=True)
class Withdrawal:
    id: str
    account: str
    amount: int


@dataclass(frozen=True, slots=True)
class Transfer:
    id: str
    payer: str
    payee: str
    amount: int


@dataclass(frozen=True, slots=True)
class Reserve:
    """A two-phase transfer's first phase: hold `amount` of the payer's money for the payee until it is posted or
    voided, or until `timeout_s` after `at_ms` (when the API took the request, in Unix ms) it expires."""

    id: str
    payer: str
    payee: str
    amount: int
    timeout_s: int
    at_ms: int


@dataclass(frozen=True, slots=True)
class PostReserved:
    """Pay the payee `amount` of reservation `id` (None: all of it); the rest goes back to the payer."""

    id: str
    amount: int | None


@dataclass(frozen=True, slots=True)
class VoidReserved:
    """Give all of reservation `id` back to the payer."""

    id: str


@dataclass(frozen=True, slots=True)
class ExpireReserved:
    """Give back those of reservations `ids` whose time had run out at `now_ms` (the owner found them due in its
    committed store; one posted or voided meanwhile stays as it is)."""

    ids: list[str]
    now_ms: int


@dataclass(frozen=True, slots=True)
class OfferRequest:
    """Ask this partition how much of `amount` the account's segment could move to partition `to`, for collection
    round `round`: nothing moves yet. The answer is always an Offer, possibly of zero."""

    account: str
    amount: int
    to: int
    round: int
    relay: RelayId | None


@dataclass(frozen=True, slots=True)
class Offer:
    """What the account's segment in partition `source` could give to round `round` when it was asked."""

    account: str
    amount: int
    source: int
    round: int
    relay: RelayId | None


@dataclass(frozen=True, slots=True)
class MoveRequest:
    """Ask this partition to move up to `amount` of the account's segment into partition `to`.

    `round` names the requester's collection round (None for a reconciler rebalance); the answer is always
    a MoveCredit, possibly of zero, so the requester knows when every segment has answered.
    """

    account: str
    amount: int
    to: int
    round: int | None
    relay: RelayId | None


@dataclass(frozen=True, slots=True)
class MoveCredit:
    """Funds debited from the account's segment in partition `source`, credited here."""

    account: str
    amount: int
    source: int
    round: int | None
    relay: RelayId | None


@dataclass(frozen=True, slots=True)
class PayeeCredit:
    """Baseline model: the payee's side of transfer `tx`, decided in the payer's home, credited in the payee's."""

    account: str
    amount: int
    tx: str
    relay: RelayId | None


ClientTransaction = Deposit | Withdrawal | Transfer | Reserve
#: what a client asks of a reservation already decided
Resolution = PostReserved | VoidReserved
Command = (
    OpenAccount | Deposit | Withdrawal | Transfer | Reserve | PostReserved | VoidReserved | ExpireReserved
    | OfferRequest | Offer | MoveRequest | MoveCredit | PayeeCredit
)  # fmt: skip

KIND_OF: dict[type, str] = {
    OpenAccount: "open",
    Deposit: "deposit",
    Withdrawal: "withdrawal",
    Transfer: "transfer",
    Reserve: "reservation",
    PostReserved: "post",
    VoidReserved: "void",
    ExpireReserved: "expire",
    OfferRequest: "offer_request",
    Offer: "offer",
    MoveRequest: "move_request",
    MoveCredit: "move_credit",
    PayeeCredit: "payee_credit",
}
TYPE_OF: dict[str, type] = {kind: cls for cls, kind in KIND_OF.items()}


def to_dict(command: Command) -> dict[str, Any]:
    """The wire form: the command's fields plus `kind`."""
    data: dict[str, Any] = {"kind": KIND_OF[type(command)]}
    for name in command.__slots__:  # type: ignore[union-attr]
        data[name] = getattr(command, name)
    return data


def _reader(cls: type) -> tuple[type, Callable[[dict[str, Any]], tuple[Any, ...]], bool]:
    """How `from_dict` rebuilds a `cls`: its field values in order, read from the dict in one C call, and whether
    the last of them is a relay id (a list on the wire, a tuple here)."""
    names: tuple[str, ...] = cls.__slots__  # type: ignore[attr-defined]
    if "relay" in names and names[-1] != "relay":
        raise TypeError(f"{cls.__name__}: the relay id must be the last field")
    if len(names) == 1:  # itemgetter of one name returns the value itself, not a tuple of it
        (name,) = names
        return cls, lambda data: (data[name],), False
    return cls, itemgetter(*names), names[-1] == "relay"


_READERS = {kind: _reader(cls) for kind, cls in TYPE_OF.items()}


def from_dict(data: dict[str, Any]) -> Command:
    """Rebuild a command from its wire form; raises KeyError/TypeError on a malformed one. Every transaction and
    relay a worker applies comes through here."""
    cls, fields, relayed = _READERS[data["kind"]]
    values = fields(data)
    if relayed and values[-1] is not None:
        values = (*values[:-1], tuple(values[-1]))
    return cls(*values)  # type: ignore[no-any-return]
