"""The product's worker with one fault injected into the money rules, for `test_failure_policy.py`: a batch holding a
transaction whose id starts with `FAULT_PREFIX` is applied halfway to the partition's state, then raises."""

from __future__ import annotations

from collections.abc import Sequence

from payments_app.domain.commands import Command
from payments_app.domain.ledger import BatchOutcome, PartitionState
from payments_app.runtime import commit
from payments_app.worker import app

FAULT_PREFIX = "boom-"
_process_batch = commit.process_batch


class InjectedFault(RuntimeError):
    pass


def process_batch_with_fault(
    state: PartitionState, partition: int, partitions: int, offset: int | None, commands: Sequence[Command], model: str
) -> BatchOutcome:
    if not any(getattr(command, "id", "").startswith(FAULT_PREFIX) for command in commands):
        return _process_batch(state, partition, partitions, offset, commands, model)
    half = max(1, len(commands) // 2)
    _process_batch(state, partition, partitions, offset, commands[:half], model)
    raise InjectedFault(f"injected after {half} of {len(commands)} commands")


commit.process_batch = process_batch_with_fault

__all__ = ["app"]
