"""The live page (`GET /`) and the cluster's figures it polls (`GET /stats`).

The page is one static file (`static/live.html`: HTML, CSS and vanilla JavaScript inline, nothing fetched from
elsewhere) that holds no data: it asks for a bearer token and reads `/stats` and the account routes with it.
`/stats` is the admin's: every worker's `/internal/progress`, gathered like `fanout.audit_all` (a worker answers
for itself without a request), put together per partition with the owners of the last rebalance.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from faust.web import Request, Response, View

from payments_app.service.app import app
from payments_app.service.errors import Backlogged, NotOwner
from payments_app.service.owners import get_json, partition_owners, this_worker_url
from payments_app.settings import SETTINGS
from web.internal import progress_report
from web.views import ApiView

LIVE_PAGE_PATH = Path(__file__).parent / "static" / "live.html"
#: a worker that does not answer within this is shown as unreachable; the page asks again every second
STATS_TIMEOUT_S = 2.0
COUNTERS = ("applied_total", "rejected_total", "segment_moves_total")
#: the page may run its own inline script and style and call this worker, nothing else
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@app.page("/")
class LivePage(View):
    async def get(self, request: Request) -> Response:
        return self.html(LIVE_PAGE_PATH.read_text(encoding="utf-8"), headers=dict(PAGE_HEADERS))


@app.page("/stats")
class Stats(ApiView):
    async def get(self, request: Request) -> Response:
        return self.json(await cluster_stats())


async def cluster_stats() -> dict[str, Any]:
    """The whole cluster's counters, and each partition's owner, applied offset and lag, from every worker that
    owns a partition (and this one); a worker that does not answer is listed with its error and counts nothing.

    The counters are each worker process's own since it started: a restarted worker's start again from 0."""
    me = this_worker_url()
    owners = partition_owners()
    hosts = sorted(set(owners.values()) | {me})

    async def one(host: str) -> tuple[dict[str, Any] | None, str | None]:
        if host == me:
            return progress_report(), None
        try:
            return await get_json(f"{host}/internal/progress", STATS_TIMEOUT_S), None
        except (TimeoutError, NotOwner, Backlogged, RuntimeError, ValueError, aiohttp.ClientError) as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    answers = dict(zip(hosts, await asyncio.gather(*map(one, hosts)), strict=True))
    partitions = []
    for partition in range(SETTINGS.partitions):
        owner = owners.get(partition)
        report = answers[owner][0] if owner is not None else None
        partitions.append(
            {
                "partition": partition,
                "owner": owner,
                "applied_offset": None if report is None else report["applied"].get(str(partition)),
                "lag_records": None if report is None else report.get("lag", {}).get(str(partition)),
            }
        )
    workers = [worker_item(host, owners, report, problem, host == me) for host, (report, problem) in answers.items()]
    return {
        "model": SETTINGS.model,
        **{name: sum(w[name] for w in workers) for name in COUNTERS},
        "lag_records": sum(p["lag_records"] or 0 for p in partitions),
        "partitions": partitions,
        "workers": workers,
    }


def worker_item(
    host: str, owners: dict[int, str], report: dict[str, Any] | None, problem: str | None, answering: bool
) -> dict[str, Any]:
    metrics = {} if report is None else report["metrics"]
    return {
        "url": host,
        "answering": answering,
        "reachable": report is not None,
        "error": problem,
        "partitions": sorted(p for p, owner in owners.items() if owner == host),
        "applied_total": metrics.get("transactions_applied_total", 0),
        "rejected_total": metrics.get("transactions_rejected_total", 0),
        "segment_moves_total": metrics.get("segment_moves_total", 0),
        "lag_records": 0 if report is None else sum(report.get("lag", {}).values()),
    }
