"""The reconciler: evens out the segments of accounts that ran short, and audits every partition.

Timers may read tables but not write them: rebalancing sends move requests to the transactions topic, which
the ledger agent applies like any relay. The audit only reads and logs; GET /audit runs it on demand.
"""

from __future__ import annotations

import logging
import os
import time

from faust.types import TP

from payments_app.agents.demand import DEMAND
from payments_app.agents.ledger import last_applied_offset
from payments_app.app import app
from payments_app.domain.commands import Command, MoveRequest
from payments_app.domain.ledger import segment_key
from payments_app.domain.segments import plan_equalization
from payments_app.fanout import Unavailable, read_ledger
from payments_app.metrics import METRICS
from payments_app.processes import EXIT_FOR_RESTART
from payments_app.queries import audit_owned_partitions, is_ready, owned_partitions
from payments_app.sending import group_by_partition, send_commands
from payments_app.settings import SETTINGS
from payments_app.topics import TRANSACTIONS_TOPIC

AUDIT_INTERVAL_S = float(os.environ.get("PAYMENTS_AUDIT_INTERVAL_S", "10"))
REBALANCE_INTERVAL_S = float(os.environ.get("PAYMENTS_REBALANCE_INTERVAL_S", "1"))
REBALANCE_ACCOUNTS_MAX = 200  # per tick: bounds the fan-out reads one tick makes
STALL_CHECK_INTERVAL_S = float(os.environ.get("PAYMENTS_STALL_CHECK_INTERVAL_S", "3"))
PARTITION_STALL_EXIT_S = float(os.environ.get("PAYMENTS_PARTITION_STALL_EXIT_S", "60"))
MIN_MOVE_SHARE = 20  # a move smaller than 1/20 of an equal share is not worth a relay
log = logging.getLogger(__name__)
_stalled: dict[int, tuple[int, float]] = {}  # partition -> (applied offset behind the highwater, since when)


@app.timer(interval=REBALANCE_INTERVAL_S)
async def rebalance_short_accounts() -> None:
    if not is_ready():
        return  # the demand waits for the rebalance or restore to end
    accounts = DEMAND.take(REBALANCE_ACCOUNTS_MAX)
    if not accounts:
        return
    partitions = SETTINGS.partitions
    try:
        segments = await read_ledger([(p, segment_key(a)) for a in accounts for p in range(partitions)])
    except Unavailable:
        DEMAND.note(accounts)  # try again next tick
        return
    requests: list[tuple[int, Command]] = []
    for n, account in enumerate(accounts):
        balances = [s["balance"] if s else 0 for s in segments[n * partitions : (n + 1) * partitions]]
        min_move = max(1, sum(balances) // (partitions * MIN_MOVE_SHARE))
        for source, destination, amount in plan_equalization(balances, min_move):
            requests.append((source, MoveRequest(account, amount, destination, None, None)))
    await send_commands(group_by_partition(requests))
    METRICS.rebalance_moves_requested_total += len(requests)


@app.timer(interval=STALL_CHECK_INTERVAL_S)
async def nudge_stalled_partitions() -> None:
    """Send an empty record to an owned partition whose unapplied records have not moved for a whole tick.

    The ledger agent fills gaps when a later record arrives; if Faust skipped the last records of a quiet
    partition, nothing would arrive. The empty record is that later record.
    """
    if not is_ready():
        _stalled.clear()
        return
    now_behind: dict[int, int] = {}
    for partition in owned_partitions():
        highwater = app.consumer.highwater(TP(TRANSACTIONS_TOPIC, partition))
        applied = last_applied_offset(partition)
        if highwater is not None and highwater > applied + 1:
            now_behind[partition] = applied
    now = time.monotonic()
    stalled = [p for p, applied in now_behind.items() if _stalled.get(p, (None, 0.0))[0] == applied]
    since = {p: _stalled[p][1] if p in stalled else now for p in now_behind}
    _stalled.clear()
    _stalled.update({p: (applied, since[p]) for p, applied in now_behind.items()})
    stuck_for = max((now - since[p] for p in stalled), default=0.0)
    if stuck_for > PARTITION_STALL_EXIT_S:
        # Faust has stopped delivering this partition's records (seen after rebalances): only a new consumer,
        # i.e. a restart, gets it going again. The supervisor restarts the worker; nothing is lost.
        log.critical("partitions %s made no progress for %.0f s despite nudges; exiting for a restart",
                     stalled, stuck_for)  # fmt: skip
        os._exit(EXIT_FOR_RESTART)
    if stalled:
        log.warning("partitions %s have unapplied records and made no progress; nudging them", stalled)
        await send_commands({partition: [] for partition in stalled}, allow_empty=True)


@app.timer(interval=AUDIT_INTERVAL_S)
async def audit_partitions() -> None:
    if not is_ready():
        return
    reports = await audit_owned_partitions()
    for partition, (_, report) in reports.items():
        for problem in report.problems:
            log.error("audit: partition %d: %s", partition, problem)
    if reports:
        balances = sum(report.balances for _, report in reports.values())
        all_ok = all(report.ok for _, report in reports.values())
        log.info("audit: %d partitions, %d minor units in segments, all ok: %s", len(reports), balances, all_ok)
