"""The product's worker with one fault injected into the money rules, for `test_failure_policy.py`: a batch holding a
transaction whose id starts with `FAULT_PREFIX` is applied halfway to the partition's state, then raises."""

from __future__ import annotations

from payments_app.runtime import commit
from payments_app.worker import app
from tests.faults import halfway_then_raise

FAULT_PREFIX = "boom-"

commit.process_batch = halfway_then_raise(
    commit.process_batch, lambda commands: any(getattr(c, "id", "").startswith(FAULT_PREFIX) for c in commands)
)

__all__ = ["app"]
