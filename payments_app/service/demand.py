"""Accounts whose segments ran short recently: the reconciler evens these out before the next payment."""

from __future__ import annotations

from collections.abc import Iterable


class DemandTracker:
    """A bounded set of account ids in arrival order; the reconciler takes them in batches."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._accounts: dict[str, None] = {}

    def note(self, accounts: Iterable[str]) -> None:
        for account in accounts:
            if len(self._accounts) < self.capacity:
                self._accounts[account] = None

    def take(self, limit: int) -> list[str]:
        taken = list(self._accounts)[:limit]
        for account in taken:
            del self._accounts[account]
        return taken


DEMAND = DemandTracker()
