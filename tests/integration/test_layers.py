"""The per-layer benchmark measures every layer on a short workload and writes what a reader needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.layers import NOTES, markdown_table, measure_layers, write_results

pytestmark = pytest.mark.broker

IN_PROCESS = ["domain", "domain+codec", "domain+codec+rocksdb"]


async def test_every_layer_is_measured_and_the_results_are_written(broker_url: str, tmp_path: Path) -> None:
    results = await measure_layers(tmp_path / "scratch", transfers=5_000, broker_url=broker_url, ack_every=4)
    assert [r.layer for r in results] == list(NOTES)
    for r in results:
        assert r.transfers == 5_000 and r.transfers_per_s > 0 and r.cpu_s > 0 and r.us_per_transfer > 0, r
    # the layers stack: the rules alone do less work than rules, codec and RocksDB (the garbage collector aside:
    # layer 1 keeps decoded entries, which the collector walks, so over long runs it can cost layer 1 the most)
    work = {r.layer: r.cpu_s - r.gc_s for r in results}
    assert work["domain"] < work["domain+codec+rocksdb"]
    # Kafka carries exactly the changelog messages the stores wrote: a commit (here each record of 500) packs its
    # partition's store entries into one
    assert "acks awaited every 4 record(s)" in results[3].note  # 10 records: acks after 4, 8 and the last 2
    assert {r.messages for r in results} == {10}

    write_results(results, tmp_path, pipeline={"pipeline, 1 worker": 16_000.0})
    rows = json.loads((tmp_path / "layers.json").read_text())
    assert [row["layer"] for row in rows] == list(NOTES)
    assert rows[0]["machine"]["cores"] and rows[0]["transfers_per_s"] == results[0].transfers_per_s
    assert (tmp_path / "layers.png").stat().st_size > 0
    table = markdown_table(results)
    assert all(f"| {name} |" in table for name in NOTES) and "changelog producer" in table


async def test_the_in_process_layers_need_no_broker_and_leave_no_database(tmp_path: Path) -> None:
    results = await measure_layers(tmp_path, transfers=1_000, include_kafka=False)
    assert [r.layer for r in results] == IN_PROCESS
    assert all(r.transfers == 1_000 and r.transfers_per_s > 0 for r in results)
    assert not list(tmp_path.iterdir())  # the scratch RocksDB is removed
    assert "changelog producer" not in markdown_table(results)
