"""Whether a worker that has records to apply has stopped applying them (the watchdog's last-resort check)."""

from __future__ import annotations

from dataclasses import dataclass

#: offsets past the last applied record that need not be records: the commit marker of its transaction
TRAILING_MARKERS = 1


@dataclass
class ProgressWatch:
    """Whether the worker has had records to apply and applied none of them for longer than `stall_s`."""

    stall_s: float
    last_total: int | None = None
    since: float = 0.0

    def stalled(self, applied: dict[int, int], highwaters: dict[int, int], now: float) -> bool:
        behind = any(hw - 1 - applied.get(p, -1) > TRAILING_MARKERS for p, hw in highwaters.items())
        total = sum(applied.values())
        if not behind or total != self.last_total:
            self.last_total, self.since = total, now
            return False
        return now - self.since > self.stall_s
