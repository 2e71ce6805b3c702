"""The bank's invariants as checks, shared by the reconciler, the tests and the benchmark.

Each partition can be audited alone: its segments (what they can spend and what reservations hold in them) must
add up to what flowed through it. Across partitions, money in flight (moved out of one segment or relayed to a
payee's home, not yet arrived) must be non-negative, and all balances plus reserved money plus money in flight must
equal deposits minus withdrawals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from payments_app.domain.ledger import PartitionMeta
from payments_app.domain.segments import Segment


@dataclass(slots=True)
class AuditReport:
    """What an audit found: the totals it computed and every problem, in words."""

    balances: int = 0
    reserved: int = 0
    deposits: int = 0
    withdrawals: int = 0
    in_flight: int = 0
    segments: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "balances": self.balances,
            "reserved": self.reserved,
            "deposits": self.deposits,
            "withdrawals": self.withdrawals,
            "in_flight": self.in_flight,
            "segments": self.segments,
            "problems": self.problems,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> AuditReport:
        fields = {k: v for k, v in data.items() if k != "ok"}
        return cls(**fields)  # type: ignore[arg-type]


class PartitionAudit:
    """The audit of one partition, fed a chunk of segments at a time (a scan of a million segments yields midway)."""

    def __init__(self, partition: int, meta: PartitionMeta) -> None:
        self.partition = partition
        self.meta = meta
        self.report = AuditReport(deposits=meta.deposits, withdrawals=meta.withdrawals)
        self.moved_in = 0
        self.moved_out = 0

    def add_stored(self, stored: Sequence[list[Any] | dict[str, Any]], account_of: Callable[[int], str]) -> None:
        """Count segments in their stored forms (`Segment.to_stored`, or version 1's dicts), many at once: an audit
        reads every segment, so the sums run in C. None may be negative; `account_of(index)` names one that is."""
        if dict in set(map(type, stored)):
            stored = [Segment.from_stored(segment).to_stored() for segment in stored]
        balances = list(map(itemgetter(0), stored))
        report = self.report
        report.segments += len(balances)
        report.balances += sum(balances)
        if max(map(len, stored), default=0) > 3:  # in C: nearly every segment has no extras to look in
            report.reserved += sum(segment[3].get("reserved", 0) for segment in stored if len(segment) > 3)
        self.moved_in += sum(map(itemgetter(1), stored))
        self.moved_out += sum(map(itemgetter(2), stored))
        if balances and min(balances) < 0:
            for index, balance in enumerate(balances):
                if balance < 0:
                    report.problems.append(f"partition {self.partition}: segment of {account_of(index)!r} is {balance}")

    def finish(self) -> AuditReport:
        """The segments must equal the flows through the partition."""
        meta, report, partition = self.meta, self.report, self.partition
        flows = (meta.deposits, -meta.withdrawals, meta.moved_in, -meta.moved_out, meta.credits_in, -meta.credits_out)
        expected = sum(flows)
        if report.balances + report.reserved != expected:
            report.problems.append(
                f"partition {partition}: segments hold {report.balances} and {report.reserved} reserved, flows say "
                f"{expected} "
                f"(deposits {meta.deposits} - withdrawals {meta.withdrawals} "
                f"+ moved in {meta.moved_in} - moved out {meta.moved_out} "
                f"+ credits in {meta.credits_in} - credits out {meta.credits_out})"
            )
        if report.reserved != meta.reserved:
            report.problems.append(
                f"partition {partition}: segments hold {report.reserved} reserved, its reservations {meta.reserved}"
            )
        if (self.moved_in, self.moved_out) != (meta.moved_in, meta.moved_out):
            report.problems.append(
                f"partition {partition}: segment moves ({self.moved_in} in, {self.moved_out} out) disagree with "
                f"totals ({meta.moved_in} in, {meta.moved_out} out)"
            )
        return report


def audit_partition(partition: int, meta: PartitionMeta, segments: Iterable[tuple[str, Segment]]) -> AuditReport:
    """Check one partition: no negative segment, and its segments equal the flows through it."""
    audit = PartitionAudit(partition, meta)
    named = list(segments)
    audit.add_stored([segment.to_stored() for _, segment in named], lambda index: named[index][0])
    return audit.finish()


def audit_ledger(partitions: Mapping[int, tuple[PartitionMeta, AuditReport]]) -> AuditReport:
    """Combine per-partition audits: conservation across the whole ledger, money in flight never negative."""
    total = AuditReport()
    moved_in = moved_out = 0
    for meta, report in partitions.values():
        total.balances += report.balances
        total.reserved += report.reserved
        total.deposits += report.deposits
        total.withdrawals += report.withdrawals
        total.segments += report.segments
        total.problems.extend(report.problems)
        moved_in += meta.moved_in + meta.credits_in
        moved_out += meta.moved_out + meta.credits_out
    total.in_flight = moved_out - moved_in
    if total.in_flight < 0:
        total.problems.append(f"more money arrived in segments than left them: in flight {total.in_flight}")
    if total.balances + total.reserved + total.in_flight != total.deposits - total.withdrawals:
        total.problems.append(
            f"money is not conserved: balances {total.balances} + reserved {total.reserved} "
            f"+ in flight {total.in_flight} "
            f"!= deposits {total.deposits} - withdrawals {total.withdrawals}"
        )
    return total
