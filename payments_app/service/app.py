"""The faust.App and its settings, and the group lease its consumer renews; agents and views attach to the app."""

from __future__ import annotations

import gc

import faust
from faust.types import TransportT

from payments_app.runtime.faust_fixes import LedgerTransport, refresh_metadata_after_timeouts
from payments_app.runtime.lease import GroupLease
from payments_app.settings import SETTINGS

#: how long Faust's producer (client submissions, reconciler requests) may wait for the broker before failing
PRODUCER_REQUEST_TIMEOUT_S = 30.0


class PaymentsApp(faust.App):
    """Faust's app on the transport from `runtime.faust_fixes` (a consumer that reads committed records only, as
    the static member `instance_id`, renewing `lease` with every heartbeat)."""

    lease: GroupLease
    instance_id: str

    def _new_transport(self) -> TransportT:
        return LedgerTransport(self.conf.broker_consumer, self)


refresh_metadata_after_timeouts()
app = PaymentsApp(
    SETTINGS.app_id,
    broker=SETTINGS.broker_url,
    datadir=str(SETTINGS.data_dir),
    processing_guarantee="at_least_once",
    topic_partitions=SETTINGS.partitions,
    topic_replication_factor=SETTINGS.replication_factor,
    # Locally each worker creates the topics it needs; in Kubernetes they come from Strimzi (`runtime.topic_check`).
    topic_allow_declare=SETTINGS.create_topics,
    topic_disable_leader=True,  # no leader-only timers: no `<app id>-__assignor-__leader` topic
    producer_acks=-1,
    producer_linger_ms=1,
    producer_request_timeout=PRODUCER_REQUEST_TIMEOUT_S,
    broker_commit_interval=1.0,
    broker_session_timeout=SETTINGS.session_timeout_s,
    # Faust's 90 s: a group coordinator that stops answering (its node paused) held the consumer that long on each
    # lookup sent to it. Twice the session timeout still covers a join waiting for a dead member's session to end.
    broker_request_timeout=2 * SETTINGS.session_timeout_s,
    # A member learns of a rebalance (another member left or joined) from its next heartbeat: at 3 s a clean
    # leave's takeover waited 1.5 s on average for it.
    broker_heartbeat_interval=min(1.0, SETTINGS.session_timeout_s / 3),
    # Faust sees none of the process environment (its settings come from `settings.py` only).
    env={},
    web_bind=SETTINGS.web_bind,
    web_port=SETTINGS.web_port,
    web_host=SETTINGS.advertised_host,
    # The group tells every worker each member's canonical URL; fan-out reads go there, so it is the internal port.
    canonical_url=f"http://{SETTINGS.advertised_host}:{SETTINGS.internal_port}",
    web_in_thread=False,
    consumer_auto_offset_reset="earliest",
    # The ledger agent's records wait in one FIFO buffer for all its partitions; Faust's default (4,096 records,
    # over a minute of 500-transfer records) let one partition's backlog hold another's new records that long.
    stream_buffer_maxsize=SETTINGS.stream_buffer_records,
)
app.instance_id = SETTINGS.instance_id
#: how long this worker is sure to still own its partitions (reads and readiness need it held)
GROUP_LEASE = app.lease = GroupLease(SETTINGS.session_timeout_s)


@app.task
async def install_diagnostics() -> None:
    from payments_app.service import diagnostics

    diagnostics.install()


@app.on_worker_init.connect
def quiet_garbage_collector(app: faust.App, **_: object) -> None:
    """Leave the objects that live for the whole process out of every collection, and collect less often.

    The agent allocates many short-lived containers per record; with the default thresholds each full
    collection walked every long-lived object too (measured: see BENCHMARKS.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(SETTINGS.gc_threshold, 20, 20)
