"""Exit when the table restore stops making progress, so the supervisor (Kubernetes, `payments run`, the test
harness) starts the worker again.

Faust's changelog recovery can stall for good ("No event received for active tp ... since recovery start"),
leaving the worker unable to serve its partitions. A fresh process restores from the changelog and carries on.
"""

from __future__ import annotations

import logging
import os
import time

from payments_app.app import app

RECOVERY_STALL_S = float(os.environ.get("PAYMENTS_RECOVERY_STALL_S", "60"))
EXIT_RECOVERY_STALLED = 75
log = logging.getLogger(__name__)

_last_remaining: int | None = None
_since: float = 0.0


@app.timer(interval=2.0)
async def exit_if_recovery_stalls() -> None:
    global _last_remaining, _since
    recovery = app.tables.recovery
    if not app.in_recovery:
        _last_remaining = None
        return
    remaining = recovery.active_remaining_total()
    now = time.monotonic()
    if remaining != _last_remaining:
        _last_remaining, _since = remaining, now
        return
    if remaining > 0 and now - _since > RECOVERY_STALL_S:
        log.critical("table restore made no progress for %.0f s (%d changelog records to go); exiting for a restart",
                     now - _since, remaining)  # fmt: skip
        os._exit(EXIT_RECOVERY_STALLED)
