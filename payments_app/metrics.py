"""Process-local counters, rendered in Prometheus text format by the /metrics view."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class Metrics:
    transactions_applied_total: int = 0
    transactions_rejected_total: int = 0
    transactions_duplicate_total: int = 0
    segment_moves_total: int = 0
    segment_moved_minor_total: int = 0
    batches_total: int = 0
    batches_replayed_total: int = 0
    relays_sent_total: int = 0
    rebalance_moves_requested_total: int = 0
    records_not_owned_total: int = 0
    groups_fenced_total: int = 0
    changelog_records_restored_total: int = 0  # read by partitions opening here, past their checkpoints
    standby_records_applied_total: int = 0  # read by this worker's standby follower

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}

    def render(self, gauges: dict[str, int]) -> str:
        lines = []
        for item in fields(self):
            lines.append(f"# TYPE payments_{item.name} counter")
            lines.append(f"payments_{item.name} {getattr(self, item.name)}")
        for name, value in gauges.items():
            lines.append(f"# TYPE payments_{name} gauge")
            lines.append(f"payments_{name} {value}")
        return "\n".join(lines) + "\n"


METRICS = Metrics()
