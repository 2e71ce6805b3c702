"""The HTTP path's clients: Debian's `wrk` (C, one event loop per thread) running `wrk_submit.lua`.

The Python clients it replaced cost a fifth of the CPU they measured (220 µs per single-transfer request against the
workers' 1,020); wrk's cost is measured in every run and reported as `wrk` beside the workers'. The workload's
payers, payees and amounts are drawn here with the Kafka path's `pick_pair` into a pool file; the script gives each
transfer an id of its own, and backs off as an answer's Retry-After asks. With `http_wait_s` every request carries
`?wait=`, so wrk's latency of each request is submit to decided; without it, wrk's latency is the acknowledgement's
(the 202).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil

SCRIPT = Path(__file__).with_name("wrk_submit.lua")
POOL_TRANSFERS = 100_000
THREADS = 2
#: wrk runs this much longer than the load (and any ?wait), so every request started is answered and counted
GRACE_S = 5


@dataclass(slots=True)
class WrkRun:
    """What wrk reports for a run: requests answered, refused ones, transfers taken, errors, latency percentiles,
    its own CPU."""

    requests: int
    non_2xx: int
    accepted: int  # transfers the workers took: each 2xx single request's, each array's items not `refused`
    timeouts: int
    socket_errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_s: float


def write_pool(path: Path, pairs: list[tuple[str, str, int]]) -> None:
    path.write_text("".join(f"{payer},{payee},{amount}\n" for payer, payee, amount in pairs))


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise FileNotFoundError("wrk is not installed: `make bench` installs Debian's wrk package")
    return found


async def run_wrk(
    targets: list[str], token: str, pool: Path, tag: str, *, clients: int, duration_s: float, batch: int = 1,
    rate_tps: float = 0.0, wait_s: float = 0.0,
) -> WrkRun:  # fmt: skip
    """Post transfers to `targets` ("http://host:port") for `duration_s`, then wait for the last answers."""
    env = {
        **os.environ, "PAYMENTS_WRK_POOL": str(pool), "PAYMENTS_WRK_TOKEN": token, "PAYMENTS_WRK_TAG": tag,
        "PAYMENTS_WRK_TARGETS": ",".join(url.removeprefix("http://") for url in targets),
        "PAYMENTS_WRK_BATCH": str(batch), "PAYMENTS_WRK_RATE": str(rate_tps), "PAYMENTS_WRK_WAIT": str(wait_s),
        "PAYMENTS_WRK_STOP_S": str(duration_s), "PAYMENTS_WRK_THREADS": str(THREADS),
    }  # fmt: skip
    command = [wrk_binary(), "-t", str(THREADS), "-c", str(max(clients, THREADS)),
               "-d", f"{duration_s + wait_s + GRACE_S:.0f}s", "--timeout", f"{wait_s + 30:.0f}s", "-s", str(SCRIPT),
               targets[0]]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    cpu_s = 0.0
    watched = psutil.Process(process.pid)
    while process.returncode is None:  # its CPU, sampled until it exits (an exited process has none to read)
        try:
            times = watched.cpu_times()
            cpu_s = times.user + times.system
        except psutil.Error:
            break
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), timeout=0.2)
        except TimeoutError:
            continue
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}: {err.decode()[-2000:]}")
    summary = orjson.loads(out.decode().strip().splitlines()[-1])
    return WrkRun(
        requests=summary["requests"], non_2xx=summary["non_2xx"], accepted=summary["accepted"],
        timeouts=summary["timeouts"], socket_errors=summary["socket_errors"], p50_ms=summary["p50_us"] / 1000,
        p95_ms=summary["p95_us"] / 1000, p99_ms=summary["p99_us"] / 1000, cpu_s=round(cpu_s, 2),
    )  # fmt: skip
