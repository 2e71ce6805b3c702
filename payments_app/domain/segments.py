"""One account's segment in one partition, and the move policy between segments.

A segment never goes below zero, so an account (the sum of its segments) never does either: the escrow
idea. When a segment cannot cover a debit, the debit waits (is "parked") while a collection round asks every
other segment of the account what it could give; money moves only when the offers cover the debit, so a debit
the whole account cannot pay is rejected without moving anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class LedgerError(RuntimeError):
    """A money rule would be broken: a bug, never a user error. The worker stops rather than apply it."""


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
    """An open collection round, in two steps. First every other segment is asked what it could give (an offer;
    nothing moves). Then, only for the waiting debits that the balance and the offers cover, the offering segments
    are asked to move just what is missing. `awaiting` counts the answers still to come in the current step."""

    id: int
    awaiting: int
    moving: bool = False  # False while offers are gathered; True once moves were asked
    offers: dict[int, int] = field(default_factory=dict)  # source partition -> amount offered

    def to_list(self) -> list[Any]:
        return [self.id, self.awaiting, self.moving, [[source, amount] for source, amount in self.offers.items()]]

    @classmethod
    def from_list(cls, data: list[Any]) -> Round:
        return cls(data[0], data[1], data[2], {source: amount for source, amount in data[3]})


@dataclass(slots=True)
class Segment:
    """The part of one account's funds that lives in one partition."""

    balance: int = 0
    moved_in: int = 0
    moved_out: int = 0
    parked: list[Parked] = field(default_factory=list)
    round: Round | None = None
    opened_by: str | None = None  # the request that created the account (kept in its home partition only)
    reserved: int = 0  # held by reservations decided in this partition: out of `balance`, not yet the payee's

    def credit(self, amount: int) -> None:
        if amount < 0:
            raise LedgerError(f"credit of {amount}")
        self.balance += amount

    def debit(self, amount: int) -> None:
        """The escrow rule: a segment never goes below zero, so neither does the account."""
        if not 0 <= amount <= self.balance:
            raise LedgerError(f"debit of {amount} from a segment holding {self.balance}")
        self.balance -= amount

    def hold(self, amount: int) -> None:
        """A reservation: the amount leaves what the segment can spend, and stays the account's until released."""
        self.debit(amount)
        self.reserved += amount

    def release(self, amount: int, kept: int) -> None:
        """A reservation of `amount` ends: `kept` of it comes back to the balance (the rest was paid out)."""
        if not 0 <= kept <= amount <= self.reserved:
            raise LedgerError(f"releasing {kept} of {amount} from a segment holding {self.reserved} reserved")
        self.reserved -= amount
        self.balance += kept

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

    def to_stored(self) -> list[Any]:
        """The stored form, written for each segment a commit changes (about two per transfer): `[balance,
        moved_in, moved_out]`, and a fourth item, a dict, only while debits wait, a round is open or the segment
        names the request that opened its account or reservations hold some of its money. A third of the dict
        form's bytes, and faster both ways."""
        data: list[Any] = [self.balance, self.moved_in, self.moved_out]
        if not self.parked and self.round is None and self.opened_by is None and not self.reserved:
            return data  # nearly every segment: no extras to gather
        extras: dict[str, Any] = {}
        if self.parked:
            extras["parked"] = [p.to_dict() for p in self.parked]
        if self.round is not None:
            extras["round"] = self.round.to_list()
        if self.opened_by is not None:
            extras["opened_by"] = self.opened_by
        if self.reserved:
            extras["reserved"] = self.reserved
        data.append(extras)
        return data

    @classmethod
    def from_stored(cls, data: list[Any] | dict[str, Any]) -> Segment:
        """From `to_stored`'s form, or from the dict form that stores and changelogs written before it hold."""
        if isinstance(data, dict):
            balance, moved_in, moved_out, extras = data["balance"], data["moved_in"], data["moved_out"], data
        elif len(data) == 3:
            return cls(data[0], data[1], data[2])
        else:
            balance, moved_in, moved_out, extras = data
        round_ = extras.get("round")
        return cls(
            balance=balance,
            moved_in=moved_in,
            moved_out=moved_out,
            parked=[Parked.from_dict(p) for p in extras.get("parked", ())],
            round=Round.from_list(round_) if round_ else None,
            opened_by=extras.get("opened_by"),
            reserved=extras.get("reserved", 0),
        )


def plan_equalization(balances: list[int], min_move: int = 1) -> list[tuple[int, int, int]]:
    """The reconciler's policy: moves `(source, destination, amount)` that even out an account's segments.

    Each segment's target is an equal share of the total (the remainder going to the first segments); segments
    above target give to those below, the largest surplus to the largest deficit first. Moves smaller than
    `min_move` are not worth a relay and are left out.
    """
    count = len(balances)
    total = sum(balances)
    targets = [total // count + (1 if i < total % count else 0) for i in range(count)]
    surplus = sorted(
        ((b - t, i) for i, (b, t) in enumerate(zip(balances, targets, strict=True)) if b > t), reverse=True
    )
    deficit = sorted(
        ((t - b, i) for i, (b, t) in enumerate(zip(balances, targets, strict=True)) if b < t), reverse=True
    )
    moves: list[tuple[int, int, int]] = []
    give = [[amount, index] for amount, index in surplus]
    need = [[amount, index] for amount, index in deficit]
    g = n = 0
    while g < len(give) and n < len(need):
        amount = min(give[g][0], need[n][0])
        if amount >= min_move:
            moves.append((give[g][1], need[n][1], amount))
        give[g][0] -= amount
        need[n][0] -= amount
        if give[g][0] == 0:
            g += 1
        if need[n][0] == 0:
            n += 1
    return moves
