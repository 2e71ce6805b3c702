"""How a worker ends itself, and the exit codes that tell its supervisor (Kubernetes, `payments run`, the tests) why.

One policy for money: a worker never goes on past something it could not apply or commit. It stops at once, before
anything more is written, and starts again from its committed state.
"""

from __future__ import annotations

import logging
import os
from typing import NoReturn

#: "stuck in a state only a fresh process fixes: start me again" (see `service.watchdog`)
EXIT_FOR_RESTART = 75
#: "this cannot go on": a record or submission it could not apply or commit, or a setting it cannot run with
EXIT_ON_FAILURE = 70

log = logging.getLogger(__name__)


def stop_worker(reason: str, exc: BaseException | None = None, code: int = EXIT_ON_FAILURE) -> NoReturn:
    """Log why, then end the process now: no `finally`, no shutdown hook, no pending commit runs after this."""
    log.critical("%s; stopping the worker", reason, exc_info=exc)
    logging.shutdown()
    os._exit(code)
