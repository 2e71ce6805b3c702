"""One account's segment in one partition, and the move policy between segments.

A segment never goes below zero, so an account (the sum of its segments) never does either: the escrow
idea. When a segment cannot cover a debit, the debit waits (is "parked") while a collection round asks
every other segment of the account for the shortfall; it is rejected only when the round brings too little.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Parked:
    """A debit waiting for funds: a withdrawal (payee None) or a transfer, in arrival order."""

    tx_id: str
    amount: int
    payee: str | None
    round: int | None  # the collection round that covers it; None until one is started

    def to_dict(self) -> dict[str, Any]:
        return {"tx_id": self.tx_id, "amount": self.amount, "payee": self.payee, "round": self.round}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Parked:
        return cls(data["tx_id"], data["amount"], data["payee"], data["round"])


@dataclass(slots=True)
class Round:
    """An open collection round: how many other segments have yet to answer."""

    id: int
    awaiting: int


@dataclass(slots=True)
class Segment:
    """The part of one account's funds that lives in one partition."""

    balance: int = 0
    moved_in: int = 0
    moved_out: int = 0
    parked: list[Parked] = field(default_factory=list)
    round: Round | None = None
    opened_by: str | None = None  # the request that created the account (kept in its home partition only)

    def credit(self, amount: int) -> None:
        assert amount >= 0, amount
        self.balance += amount

    def debit(self, amount: int) -> None:
        assert 0 <= amount <= self.balance, (amount, self.balance)
        self.balance -= amount

    def can_pay_now(self, amount: int) -> bool:
        """True when a new debit may be applied at once: funds are here and nobody is queued before it."""
        return not self.parked and amount <= self.balance

    def shortfall(self) -> int:
        """How much the parked debits need beyond this segment's balance."""
        return max(0, sum(p.amount for p in self.parked) - self.balance)

    def amount_to_give(self, requested: int) -> int:
        """The move policy: give what is asked, up to the balance, unless our own debits are waiting."""
        if self.parked:
            return 0
        return min(self.balance, requested)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"balance": self.balance, "moved_in": self.moved_in, "moved_out": self.moved_out}
        if self.parked:
            data["parked"] = [p.to_dict() for p in self.parked]
        if self.round is not None:
            data["round"] = [self.round.id, self.round.awaiting]
        if self.opened_by is not None:
            data["opened_by"] = self.opened_by
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        round_ = data.get("round")
        return cls(
            balance=data["balance"],
            moved_in=data["moved_in"],
            moved_out=data["moved_out"],
            parked=[Parked.from_dict(p) for p in data.get("parked", ())],
            round=Round(round_[0], round_[1]) if round_ else None,
            opened_by=data.get("opened_by"),
        )
