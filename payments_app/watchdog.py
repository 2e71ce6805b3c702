"""Exit for a restart when the worker is stuck in a state only a restart fixes; a last resort no test should see.

* A member that joined while the topics were being created can be routed ledger partitions its consumer was
  never given ("Ignoring missing topic"): nobody applies or serves them until the next rebalance, which a
  restart causes.
* The worker has records to apply (the consumer's high-water mark is past the applied offset by more than the
  transaction marker that may trail the last record) but no partition has applied anything for
  `PAYMENTS_NO_PROGRESS_EXIT_S`: progress is judged across all partitions, so a busy worker never exits. Every
  wait in the ledger runtime has its own deadline; this catches what is outside it (a consumer that stopped
  fetching).

The supervisor (Kubernetes, `payments run`, the test harness) starts the worker again.
"""

from __future__ import annotations

import logging
import os
import time

from faust.types import TP

from payments_app.app import app
from payments_app.fanout import partition_owners
from payments_app.processes import EXIT_FOR_RESTART
from payments_app.queries import applied_offsets, is_ready, owned_partitions
from payments_app.runtime.progress import ProgressWatch
from payments_app.topics import TRANSACTIONS_TOPIC

ASSIGNMENT_MISMATCH_S = float(os.environ.get("PAYMENTS_ASSIGNMENT_MISMATCH_S", "30"))
NO_PROGRESS_EXIT_S = float(os.environ.get("PAYMENTS_NO_PROGRESS_EXIT_S", "180"))

log = logging.getLogger(__name__)

_mismatch_since: float | None = None


@app.timer(interval=2.0)
async def exit_if_routed_partitions_are_not_consumed() -> None:
    global _mismatch_since
    if not is_ready():
        _mismatch_since = None
        return
    routed, owned = routed_partitions(), owned_partitions()
    now = time.monotonic()
    if routed == owned:
        _mismatch_since = None
        return
    if _mismatch_since is None:
        _mismatch_since = now
    elif now - _mismatch_since > ASSIGNMENT_MISMATCH_S:
        log.critical("the group routes partitions %s here but this worker consumes %s; exiting for a restart",
                     sorted(routed), sorted(owned))  # fmt: skip
        os._exit(EXIT_FOR_RESTART)


PROGRESS = ProgressWatch(NO_PROGRESS_EXIT_S)


@app.timer(interval=5.0)
async def exit_if_nothing_is_applied() -> None:
    applied = applied_offsets()
    highwaters = {p: hw for p in applied if (hw := app.consumer.highwater(TP(TRANSACTIONS_TOPIC, p))) is not None}
    if PROGRESS.stalled(applied, highwaters, time.monotonic()):
        log.critical("records are waiting in partitions %s but nothing was applied for %.0f s; exiting for a "
                     "restart", sorted(highwaters), NO_PROGRESS_EXIT_S)  # fmt: skip
        os._exit(EXIT_FOR_RESTART)


def routed_partitions() -> set[int]:
    """The ledger partitions the group's routing says this worker serves."""
    me = str(app.conf.canonical_url).rstrip("/")
    return {partition for partition, host in partition_owners().items() if host == me}
