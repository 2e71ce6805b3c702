"""`kill -USR1 <worker pid>` writes every asyncio task's stack to the worker's log: what is it waiting for?"""

from __future__ import annotations

import asyncio
import io
import logging
import signal

log = logging.getLogger(__name__)


def dump_tasks() -> None:
    out = io.StringIO()
    for task in asyncio.all_tasks():
        out.write(f"--- {task.get_name()} {task.get_coro()!r}\n")
        task.print_stack(file=out)
    log.warning("asyncio tasks on SIGUSR1:\n%s", out.getvalue())


def install() -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
