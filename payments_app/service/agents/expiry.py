"""Reservations whose time ran out go back to their payers: each owner looks for due ones in its committed stores
and stages their expiry, which the domain applies to those still reserved (one posted or voided meanwhile stays as
it is). The deadline is compared with the owner's clock, once the reservation is committed: after a restart or a
takeover the new owner finds the same entries, so each expires once."""

from __future__ import annotations

import logging
import time

from payments_app.domain.commands import ExpireReserved
from payments_app.domain.ledger import EXPIRED
from payments_app.service.app import app
from payments_app.service.composition import INTAKE, READS
from payments_app.service.errors import NotOwner, Unavailable

#: how often an owner looks: a reservation expires within about this long after its deadline
EXPIRY_INTERVAL_S = 1.0
#: reservations expired per partition per look (one command): a backlog drains over the next looks
MAX_EXPIRED_PER_LOOK = 1_000
log = logging.getLogger(__name__)


@app.timer(interval=EXPIRY_INTERVAL_S)
async def expire_reservations() -> None:
    now_ms = time.time_ns() // 1_000_000
    for partition in sorted(READS.sessions.open_partitions()):
        try:
            due = READS.due_reservations(partition, now_ms, MAX_EXPIRED_PER_LOOK)
            if due:
                changed = await INTAKE.stage(partition, [ExpireReserved(due, now_ms)])
                asked = set(due)
                expired = sum(record.status == EXPIRED and record.id in asked for record in changed)
                log.info("partition %d: %d of %d due reservations expired", partition, expired, len(due))
        except (NotOwner, Unavailable) as exc:
            log.info("partition %d: reservations not expired now (%s)", partition, exc)
