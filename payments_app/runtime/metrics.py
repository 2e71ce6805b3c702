"""What a worker reports to Prometheus (`/metrics` on the internal port).

The hot path only adds to plain integers (`Metrics`); a custom collector turns them into counters when Prometheus
scrapes, so an applied transfer costs an addition, not a call into a metrics library. The histograms (HTTP
latency, submission to decision, opening a partition) are prometheus_client's, observed once per request or event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

HELP = {
    "transactions_applied_total": "client transactions applied by this worker's partitions",
    "transactions_rejected_total": "client transactions rejected (insufficient funds, unknown account, ...)",
    "transactions_duplicate_total": "records of an id already decided, skipped",
    "segment_moves_total": "money moves between an account's segments (collection rounds, rebalancing)",
    "segment_moved_minor_total": "minor units moved between segments",
    "batches_total": "transaction records applied",
    "batches_replayed_total": "records applied again after a restart or takeover (found already applied)",
    "relays_sent_total": "commands relayed to other partitions",
    "rebalance_moves_requested_total": "segment moves the reconciler asked for",
    "records_not_owned_total": "records delivered for a partition this worker no longer owns",
    "groups_fenced_total": "partition commits dropped because a new owner fenced this worker",
    "changelog_records_restored_total": "changelog records read by partitions opening here, past their checkpoint",
    "standby_records_applied_total": "changelog records applied by this worker's standby follower",
    "rebalances_total": "assignments this worker received from the consumer group",
    "partitions_opened_total": "ledger partitions opened here (fenced, restored, caught up)",
}


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
    changelog_records_restored_total: int = 0
    standby_records_applied_total: int = 0
    rebalances_total: int = 0
    partitions_opened_total: int = 0

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


METRICS = Metrics()

HTTP_SECONDS = Histogram(
    "payments_http_request_duration_seconds",
    "client API requests, from arrival to answer",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DECISION_SECONDS = Histogram(
    "payments_submission_decided_seconds",
    "client submissions, from their arrival at the partition's owner to their decision",
    buckets=(0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PARTITION_OPEN_SECONDS = Histogram(
    "payments_partition_open_seconds",
    "opening a ledger partition: waiting out its earlier writer, restoring its store's tail, catching up",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)

COMMIT_SECONDS = Histogram(
    "payments_commit_duration_seconds",
    "a group's Kafka transaction, from its start to the broker's answer to EndTxn (committed or fenced)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

RECORD_SECONDS = Histogram(
    "payments_record_committed_seconds",
    "records of the transactions topic, from their timestamp (their producer's clock) to the commit that applied "
    "them: the pipeline's latency, without any reader's",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
)


class LedgerCollector(Collector):
    """The plain counters as Prometheus counters, and the gauges `gauges()` reads at scrape time."""

    def __init__(self, gauges: Callable[[], dict[str, tuple[str, float]]]) -> None:
        self._gauges = gauges

    def describe(self) -> list[Metric]:
        """Nothing up front: the registry then need not collect (read the gauges) when this is registered."""
        return []

    def collect(self) -> Iterator[Metric]:
        for name, value in METRICS.as_dict().items():
            yield CounterMetricFamily(f"payments_{name.removesuffix('_total')}", HELP[name], value=value)
        for name, (help_text, value) in self._gauges().items():
            yield GaugeMetricFamily(f"payments_{name}", help_text, value=value)


def register_collector(gauges: Callable[[], dict[str, tuple[str, float]]]) -> None:
    REGISTRY.register(LedgerCollector(gauges))
