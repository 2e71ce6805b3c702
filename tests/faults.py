"""Faults injected into the money rules, shared by the unit and the real-broker tests of the failure policy."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from payments_app.domain.commands import Command
from payments_app.domain.ledger import BatchOutcome, PartitionState

ProcessBatch = Callable[[PartitionState, int, int, "int | None", Sequence[Command], str], BatchOutcome]


class InjectedFault(RuntimeError):
    pass


def halfway_then_raise(process_batch: ProcessBatch, applies: Callable[[Sequence[Command]], bool]) -> ProcessBatch:
    """`process_batch`, except that a batch `applies` picks has its first half applied to the partition's state, as
    the rules would, and then raises InjectedFault."""

    def faulty(
        state: PartitionState, partition: int, partitions: int, offset: int | None, commands: Sequence[Command],
        model: str,
    ) -> BatchOutcome:  # fmt: skip
        if not applies(commands):
            return process_batch(state, partition, partitions, offset, commands, model)
        half = max(1, len(commands) // 2)
        process_batch(state, partition, partitions, offset, commands[:half], model)
        raise InjectedFault(f"injected after {half} of {len(commands)} commands")

    return faulty
