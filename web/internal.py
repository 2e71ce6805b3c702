"""The workers' own routes, on their own port (PAYMENTS_INTERNAL_PORT), never on the client API's.

Other workers call them for fan-out reads and audits (a worker's canonical URL is this port), the benchmark and
`/stats` (`web.live`) read progress, Prometheus scrapes `/metrics`. In Kubernetes a NetworkPolicy lets only the
workers reach this port and the client Service does not expose it; locally it binds where the API does (127.0.0.1
by default).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import mode
import orjson
from aiohttp import web as aiohttp_web
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from payments_app.domain.commands import ClientTransaction, PostReserved, Resolution, VoidReserved, from_dict
from payments_app.domain.money import InvalidInput
from payments_app.runtime.metrics import METRICS, register_collector
from payments_app.service.app import app
from payments_app.service.composition import INTAKE, READS, owned_partitions
from payments_app.service.errors import Backlogged, NotOwner, Unavailable
from payments_app.service.owners import local_audit
from payments_app.service.topics import TRANSACTIONS_TOPIC
from payments_app.settings import SETTINGS
from tables.codec import STORED_FORMAT
from web.parsing import BodyTooLarge, parse_json

JSON = "application/json"
T = TypeVar("T")


def _json(value: Any, status: int = 200) -> aiohttp_web.Response:
    return aiohttp_web.Response(status=status, body=orjson.dumps(value), content_type=JSON)


#: what the owner says when it does not answer a request itself: the error's name in the body, and the status
REFUSALS: dict[type[Exception], tuple[str, int]] = {
    NotOwner: ("not_owner", 409),
    Backlogged: ("backlogged", 429),
    Unavailable: ("unavailable", 503),
}


def _refusal(exc: Exception) -> dict[str, str]:
    return {"error": REFUSALS[type(exc)][0], "detail": str(exc)}


async def _owner_answer(
    request: aiohttp_web.Request, parse: Callable[[Any], T], answer: Callable[[T], Awaitable[Any]]
) -> aiohttp_web.Response:
    """What `answer` says to the body `parse` read: 400 for a body it cannot read, 409 when a partition is not (or
    no longer) open here, 429 when its owner holds too many undecided submissions, 503 when it cannot commit now."""
    try:
        args = parse(parse_json(await request.read()))
    except (BodyTooLarge, InvalidInput, KeyError, TypeError, ValueError) as exc:
        return _json({"error": "malformed_request", "detail": str(exc)}, status=400)
    try:
        return _json(await answer(args))
    except (NotOwner, Backlogged, Unavailable) as exc:
        return _json(_refusal(exc), status=REFUSALS[type(exc)][1])


async def entries(request: aiohttp_web.Request) -> aiohttp_web.Response:
    """Another worker's fan-out read of partitions this worker owns: `[[partition, key], ...]` -> values."""

    def parse(body: Any) -> list[tuple[int, str]]:
        return [(int(p), str(key)) for p, key in body]

    async def answer(requests: list[tuple[int, str]]) -> Any:
        return READS.read_values(requests)

    return await _owner_answer(request, parse, answer)


Submission = tuple[int, list[ClientTransaction], float]


async def submit(request: aiohttp_web.Request) -> aiohttp_web.Response:
    """Another worker hands over client transactions of partitions this worker owns (`intake.Intake.submit`), as
    many submissions as it coalesced (`service.owners.Submissions`): `[{"partition", "transactions": [wire form],
    "wait_s"}, ...]` -> per submission `{"answers": [[status, body], ...]}`, or `{"error": "not_owner",
    "backlogged" or "unavailable", "detail"}`."""

    def parse(body: Any) -> list[Submission]:
        return [parse_submission(item) for item in body]

    async def answer(submissions: list[Submission]) -> Any:
        return await asyncio.gather(*(answer_one(*submission) for submission in submissions))

    return await _owner_answer(request, parse, answer)


def parse_submission(body: Any) -> Submission:
    transactions = [from_dict(item) for item in body["transactions"]]
    if not all(isinstance(tx, ClientTransaction) for tx in transactions):
        raise TypeError("only deposits, withdrawals, transfers and reservations are submitted")
    return int(body["partition"]), transactions, float(body["wait_s"])  # type: ignore[return-value]


async def answer_one(partition: int, transactions: list[ClientTransaction], wait_s: float) -> dict[str, Any]:
    try:
        return {"answers": await INTAKE.submit(partition, transactions, wait_s)}
    except (NotOwner, Backlogged, Unavailable) as exc:
        return _refusal(exc)


async def lookup(request: aiohttp_web.Request) -> aiohttp_web.Response:
    """A transaction's record in a partition this worker owns, waited for up to `wait_s` if it is pending:
    `{"partition", "id", "wait_s"}` -> `{"record": ... or null}`."""

    def parse(body: Any) -> tuple[int, str, float]:
        return int(body["partition"]), str(body["id"]), float(body["wait_s"])

    async def answer(args: tuple[int, str, float]) -> Any:
        return {"record": await INTAKE.lookup(*args)}

    return await _owner_answer(request, parse, answer)


async def resolve(request: aiohttp_web.Request) -> aiohttp_web.Response:
    """Post or void a reservation decided in a partition this worker owns (`intake.Intake.resolve`):
    `{"partition", "command": wire form}` -> `{"record": ... or null}`."""

    def parse(body: Any) -> tuple[int, Resolution]:
        command = from_dict(body["command"])
        if not isinstance(command, PostReserved | VoidReserved):
            raise TypeError("only a post or a void resolves a reservation")
        return int(body["partition"]), command

    async def answer(args: tuple[int, Resolution]) -> Any:
        return {"record": await INTAKE.resolve(*args)}

    return await _owner_answer(request, parse, answer)


async def history(request: aiohttp_web.Request) -> aiohttp_web.Response:
    """An account's history in a partition this worker owns (`queries.LocalReads.account_history`):
    `{"partition", "account", "before", "limit"}` -> `[[position, item], ...]`."""

    def parse(body: Any) -> tuple[int, str, str | None, int]:
        before = None if body["before"] is None else str(body["before"])
        return int(body["partition"]), str(body["account"]), before, int(body["limit"])

    async def answer(args: tuple[int, str, str | None, int]) -> Any:
        return READS.account_history(*args)

    return await _owner_answer(request, parse, answer)


async def progress(request: aiohttp_web.Request) -> aiohttp_web.Response:
    return _json(progress_report())


def progress_report() -> dict[str, Any]:
    """The last offset this worker applied in each partition it owns, the records behind it there, and its counters
    (read by the benchmark, and by `/stats` from every worker): `{"applied": {p: offset}, "lag": {p: records},
    "metrics": {name: count}, "stored_format": the version this worker writes}`."""
    applied = READS.applied_offsets()
    return {
        "applied": {str(p): offset for p, offset in applied.items()},
        "lag": {str(p): records for p, records in partition_lag(applied).items()},
        "metrics": METRICS.as_dict(),
        "stored_format": STORED_FORMAT,
    }


async def audit(request: aiohttp_web.Request) -> aiohttp_web.Response:
    return _json(await local_audit())


async def metrics(request: aiohttp_web.Request) -> aiohttp_web.Response:
    response = aiohttp_web.Response(body=generate_latest(REGISTRY))
    response.content_type, response.charset = "text/plain", "utf-8"
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def gauges() -> dict[str, tuple[str, float]]:
    return {
        "owned_partitions": ("ledger partitions this worker owns", len(owned_partitions())),
        "ready": ("1 when every partition assigned here is open and the group is in touch", int(READS.is_ready())),
        "consumer_lag_records": ("offsets in the owned transactions partitions past the last applied", lag()),
        "submissions_waiting": ("submissions taken here and not decided yet (429 past the bound)", INTAKE.size),
    }


def lag() -> int:
    """Offsets in the open transactions partitions past the last one applied (transaction markers count too)."""
    return sum(partition_lag(READS.applied_offsets()).values())


def partition_lag(applied: dict[int, int]) -> dict[int, int]:
    """Per open partition, offsets past the last one applied; a partition whose highwater the consumer has not
    seen yet is left out."""
    lags = {}
    for partition, offset in applied.items():
        highwater = app.consumer.highwater(TP(TRANSACTIONS_TOPIC, partition))
        if highwater is not None:
            lags[partition] = max(0, highwater - offset - 1)
    return lags


def internal_app() -> aiohttp_web.Application:
    routes = aiohttp_web.Application()
    routes.router.add_post("/internal/entries", entries)
    routes.router.add_post("/internal/submit", submit)
    routes.router.add_post("/internal/lookup", lookup)
    routes.router.add_post("/internal/resolve", resolve)
    routes.router.add_post("/internal/history", history)
    routes.router.add_get("/internal/progress", progress)
    routes.router.add_post("/internal/audit", audit)
    routes.router.add_get("/metrics", metrics)
    return routes


class InternalServer(mode.Service):
    """The internal routes' HTTP server, started and stopped with the worker."""

    _runner: aiohttp_web.AppRunner | None = None
    listening = False

    async def on_start(self) -> None:
        self._runner = aiohttp_web.AppRunner(internal_app(), access_log=None)
        await self._runner.setup()
        await aiohttp_web.TCPSite(self._runner, SETTINGS.web_bind, SETTINGS.internal_port).start()
        self.listening = True

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


INTERNAL_SERVER = InternalServer()
app.service(INTERNAL_SERVER)  # type: ignore[arg-type]  # Faust starts an instance as it would a class
register_collector(gauges)
