"""The faust.App and its settings, nothing else: tables, agents and views attach themselves to it."""

from __future__ import annotations

import gc
import os
import shutil

import faust

from payments_app.settings import SETTINGS

GC_THRESHOLD = int(os.environ.get("PAYMENTS_GC_THRESHOLD", "50000"))  # young-generation allocations

app = faust.App(
    SETTINGS.app_id,
    broker=SETTINGS.broker_url,
    store="rocksdb://",
    datadir=str(SETTINGS.data_dir),
    processing_guarantee="at_least_once",
    topic_partitions=SETTINGS.partitions,
    topic_replication_factor=SETTINGS.replication_factor,
    topic_allow_declare=True,
    table_standby_replicas=0,
    producer_acks=-1,
    producer_linger_ms=1,
    broker_commit_interval=1.0,
    broker_session_timeout=SETTINGS.session_timeout_s,
    broker_heartbeat_interval=min(3.0, SETTINGS.session_timeout_s / 3),
    web_bind=SETTINGS.web_bind,
    web_in_thread=False,
    consumer_auto_offset_reset="earliest",
)


@app.on_worker_init.connect
def restore_tables_from_changelog_only(app: faust.App, **_: object) -> None:
    """Start every worker from the changelog alone.

    Faust writes a table entry to the local RocksDB before the changelog broker has acknowledged it, so after a
    crash the local store can hold writes that the changelog never got. Another worker that takes the
    partition over would not see them; restoring from the changelog keeps every worker on one history.
    """
    shutil.rmtree(app.conf.tabledir, ignore_errors=True)


@app.task
async def install_diagnostics() -> None:
    from payments_app import diagnostics

    diagnostics.install()


@app.on_worker_init.connect
def quiet_garbage_collector(app: faust.App, **_: object) -> None:
    """Leave the objects that live for the whole process out of every collection, and collect less often.

    The agent allocates many short-lived containers per record; with the default thresholds each full
    collection walked every long-lived object too (measured: see BENCHMARKS.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
