"""The benchmark matrix: each setting in turn, the Kafka-path runs on one broker, the PostgreSQL peer on its own,
the machine's pace measured before each run (`bench.pace`)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from bench.common import RunResult, RunSettings
from bench.driver import run_group, same_cluster
from bench.pace import Pace
from bench.postgres_peer import run_postgres
from devtools.local_kafka import LocalKafka, configured_broker_url


async def run_matrix(matrix: list[RunSettings], scratch: Path) -> list[RunResult]:
    """Run each setting in turn: Kafka runs on one broker (ours unless BROKER_URL is set), the peer on its own."""
    configured = configured_broker_url()
    kafka: LocalKafka | None = None
    if configured is None and any(settings.model != "postgres" for settings in matrix):
        kafka = LocalKafka(scratch / "kafka", heap="1g")
        await asyncio.to_thread(kafka.start)
    broker_url = configured or (kafka.url if kafka else "")
    results = []
    pace = Pace()
    try:
        for group in cluster_groups(matrix):
            if group[0].model == "postgres":
                for settings in group:
                    pace_us = await asyncio.to_thread(pace.measure)
                    results.append(await run_postgres(settings, scratch / "postgres", pace_us=pace_us))
            else:
                results.extend(await run_group(group, broker_url, kafka.pid if kafka else None, scratch, pace.measure))
    finally:
        if kafka is not None:
            kafka.stop()
    if kafka is not None and all(result.invariants_ok for result in results):
        shutil.rmtree(kafka.data_dir, ignore_errors=True)  # every run's topics: many gigabytes; kept after a failure
    return results


def cluster_groups(matrix: list[RunSettings]) -> list[list[RunSettings]]:
    """The matrix in order, cut where the next run cannot share the cluster of the one before it (the order is the
    matrix's own: the models take turns, and the PostgreSQL control comes first and last)."""
    groups: list[list[RunSettings]] = []
    for settings in matrix:
        if groups and same_cluster(groups[-1][-1]) == same_cluster(settings):
            groups[-1].append(settings)
        else:
            groups.append([settings])
    return groups
