"""Standby replicas (runtime.standby) driven by the group's routing: which partitions this worker follows."""

from __future__ import annotations

from payments_app.runtime.standby import standby_partitions
from payments_app.service.app import app
from payments_app.service.composition import LEDGER
from payments_app.service.owners import partition_owners, this_worker_url
from payments_app.settings import SETTINGS

FOLLOW_CHECK_INTERVAL_S = 2.0


@app.task
async def follow_standby_partitions() -> None:
    await LEDGER.standby.run()


@app.timer(interval=FOLLOW_CHECK_INTERVAL_S)
async def choose_standby_partitions() -> None:
    """Follow the partitions this worker is a standby of, as the last rebalance routed them."""
    wanted = standby_partitions(partition_owners(), this_worker_url(), SETTINGS.standby_replicas) - LEDGER.assigned()
    if wanted != LEDGER.standby.partitions:
        LEDGER.standby.follow(wanted)
