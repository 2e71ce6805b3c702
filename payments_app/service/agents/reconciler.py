"""The reconciler: evens out the segments of accounts that ran short, and audits every partition.

Timers may read tables but not write them: rebalancing sends move requests to the transactions topic, which
the ledger agent applies like any relay. The audit only reads and logs; GET /audit runs it on demand.
"""

from __future__ import annotations

import logging
import time

from payments_app.domain.commands import Command, MoveRequest
from payments_app.domain.ledger import segment_key
from payments_app.domain.segments import Segment, plan_equalization
from payments_app.runtime.metrics import METRICS
from payments_app.service.app import app
from payments_app.service.composition import READS
from payments_app.service.demand import DEMAND
from payments_app.service.errors import Unavailable
from payments_app.service.owners import read_ledger
from payments_app.service.publish import send_commands
from payments_app.settings import SETTINGS
from tables.codec import group_by_partition

REBALANCE_ACCOUNTS_MAX = 200  # per tick: bounds the fan-out reads one tick makes
MIN_MOVE_SHARE = 20  # a move smaller than 1/20 of an equal share is not worth a relay
log = logging.getLogger(__name__)


@app.timer(interval=SETTINGS.rebalance_interval_s)
async def rebalance_short_accounts() -> None:
    if not READS.is_ready():
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
        balances = [Segment.from_stored(s).balance if s else 0 for s in segments[n * partitions : (n + 1) * partitions]]
        min_move = max(1, sum(balances) // (partitions * MIN_MOVE_SHARE))
        for source, destination, amount in plan_equalization(balances, min_move):
            requests.append((source, MoveRequest(account, amount, destination, None, None)))
    await send_commands(group_by_partition(requests))
    METRICS.rebalance_moves_requested_total += len(requests)


class AuditPace:
    """Keeps the background audit to about a tenth of the worker's time: at a million accounts one audit reads
    millions of segments, which every 10 s would take most of a core."""

    SHARE = 0.1

    def __init__(self) -> None:
        self.next_at = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def took(self, seconds: float) -> None:
        self.next_at = time.monotonic() + seconds * (1 / self.SHARE - 1)


AUDIT_PACE = AuditPace()


@app.timer(interval=SETTINGS.audit_interval_s)
async def audit_partitions() -> None:
    if not READS.is_ready() or not AUDIT_PACE.due():
        return
    started = time.monotonic()
    reports = await READS.audit_owned_partitions()
    AUDIT_PACE.took(time.monotonic() - started)
    for partition, (_, report) in reports.items():
        for problem in report.problems:
            log.error("audit: partition %d: %s", partition, problem)
    if reports:
        balances = sum(report.balances for _, report in reports.values())
        all_ok = all(report.ok for _, report in reports.values())
        log.info("audit: %d partitions, %d minor units in segments, all ok: %s", len(reports), balances, all_ok)
