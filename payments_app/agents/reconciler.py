"""The reconciler's audit: every few seconds each worker audits the partitions it owns and logs what it finds.

Timers may read tables but not write them. GET /audit runs the same audit on demand across all workers.
"""

from __future__ import annotations

import logging
import os

from payments_app.app import app
from payments_app.queries import audit_owned_partitions, is_ready

AUDIT_INTERVAL_S = float(os.environ.get("PAYMENTS_AUDIT_INTERVAL_S", "10"))
log = logging.getLogger(__name__)


@app.timer(interval=AUDIT_INTERVAL_S)
async def audit_partitions() -> None:
    if not is_ready():
        return
    reports = audit_owned_partitions()
    for partition, (_, report) in reports.items():
        for problem in report.problems:
            log.error("audit: partition %d: %s", partition, problem)
    if reports:
        balances = sum(report.balances for _, report in reports.values())
        log.info(
            "audit: %d partitions, %d minor units in segments, all ok: %s",
            len(reports),
            balances,
            all(r.ok for _, r in reports.values()),
        )
