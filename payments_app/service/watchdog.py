"""Exit for a restart when the worker is stuck in a state only a restart fixes; a last resort no test should see.

* A member that joined while the topics were being created can be routed ledger partitions its consumer was
  never given ("Ignoring missing topic"): nobody applies or serves them until the next rebalance, which a
  restart causes.
* The worker has records to apply (the consumer's high-water mark is past the applied offset by more than the
  transaction marker that may trail the last record) but no partition has applied anything for
  `PAYMENTS_SETTINGS.no_progress_exit_s`: progress is judged across all partitions, so a busy worker never exits. Every
  wait in the ledger runtime has its own deadline; this catches what is outside it (a consumer that stopped
  fetching).

The supervisor (Kubernetes, `payments run`, the test harness) starts the worker again.
"""

from __future__ import annotations

import time

from faust.types import TP

from payments_app.exits import EXIT_FOR_RESTART, stop_worker
from payments_app.runtime.progress import ProgressWatch
from payments_app.service.app import app
from payments_app.service.composition import READS, owned_partitions
from payments_app.service.owners import partition_owners, this_worker_url
from payments_app.service.topics import TRANSACTIONS_TOPIC
from payments_app.settings import SETTINGS

_mismatch_since: float | None = None


@app.timer(interval=2.0)
async def exit_if_routed_partitions_are_not_consumed() -> None:
    global _mismatch_since
    if not READS.is_ready():
        _mismatch_since = None
        return
    routed, owned = routed_partitions(), owned_partitions()
    now = time.monotonic()
    if routed == owned:
        _mismatch_since = None
        return
    if _mismatch_since is None:
        _mismatch_since = now
    elif now - _mismatch_since > SETTINGS.assignment_mismatch_s:
        reason = f"the group routes partitions {sorted(routed)} here but this worker consumes {sorted(owned)}"
        stop_worker(reason, code=EXIT_FOR_RESTART)


PROGRESS = ProgressWatch(SETTINGS.no_progress_exit_s)


@app.timer(interval=5.0)
async def exit_if_nothing_is_applied() -> None:
    applied = READS.applied_offsets()
    highwaters = {p: hw for p in applied if (hw := app.consumer.highwater(TP(TRANSACTIONS_TOPIC, p))) is not None}
    if PROGRESS.stalled(applied, highwaters, time.monotonic()):
        reason = (f"records are waiting in partitions {sorted(highwaters)} but nothing was applied for "
                  f"{SETTINGS.no_progress_exit_s:.0f} s")  # fmt: skip
        stop_worker(reason, code=EXIT_FOR_RESTART)


def routed_partitions() -> set[int]:
    """The ledger partitions the group's routing says this worker serves."""
    me = this_worker_url()
    return {partition for partition, host in partition_owners().items() if host == me}
