"""Who owns each partition, and asking them: a read, an audit or a submission goes to the owner's internal routes
(`web.internal`), or is answered locally when the owner is this worker; retried through a rebalance."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import orjson

from payments_app.service.app import GROUP_LEASE, app
from payments_app.service.coalescer import Coalescer
from payments_app.service.composition import READS
from payments_app.service.errors import Backlogged, NotOwner, Unavailable
from payments_app.service.intake import Verdict
from payments_app.service.topics import TRANSACTIONS_TOPIC
from payments_app.settings import SETTINGS

RETRY_FOR_S = 10.0
RETRY_PAUSE_S = 0.2
REQUEST_TIMEOUT_S = 10.0
#: a worker's audit reads every segment it holds: seconds at a million accounts
AUDIT_TIMEOUT_S = 120.0
_client: aiohttp.ClientSession | None = None
T = TypeVar("T")


def partition_owners() -> dict[int, str]:
    """Which worker URL owns each partition of the ledger (its transactions partition), per the last rebalance."""
    owners: dict[int, str] = {}
    for host, topics in app.router.external_topics_metadata().items():
        for partition in topics.get(TRANSACTIONS_TOPIC, ()):
            owners[partition] = str(host).rstrip("/")
    return owners


def _http() -> aiohttp.ClientSession:
    global _client
    if _client is None or _client.closed:
        _client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
    return _client


async def post_json(url: str, payload: Any, timeout_s: float = REQUEST_TIMEOUT_S) -> Any:
    """Another worker's answer to a POST on its internal port (`web.internal`)."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with _http().post(url, data=orjson.dumps(payload), timeout=timeout) as response:
        return _answer_of(url, response.status, await response.read())


async def get_json(url: str, timeout_s: float = REQUEST_TIMEOUT_S) -> Any:
    """Another worker's answer to a GET on its internal port (`web.internal`)."""
    async with _http().get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
        return _answer_of(url, response.status, await response.read())


def _answer_of(url: str, status: int, body: bytes) -> Any:
    """The body of a 200; the internal routes' refusals as the errors they stand for; any other status is a fault
    at the other worker, not a reason to retry."""
    if status == 200:
        return orjson.loads(body)
    if status == 409:
        raise NotOwner(f"{url}: {orjson.loads(body)['detail']}")
    if status == 429:
        raise Backlogged(orjson.loads(body)["detail"])
    if status == 503:
        raise Unavailable(orjson.loads(body)["detail"])
    raise RuntimeError(f"{url} answered {status}: {body[:200]!r}")


def this_worker_url() -> str:
    """This worker's canonical URL, as `partition_owners` names it."""
    return str(app.conf.canonical_url).rstrip("/")


async def _through_rebalance(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """`attempt()`, tried again while a rebalance leaves `what` without a reachable owner; refused at once while
    this worker has lost touch with the group (its view of who owns what may be stale: `runtime.lease`)."""
    if not GROUP_LEASE.held():
        raise Unavailable("this worker has not heard from the Kafka group lately; ask another worker")
    deadline = asyncio.get_running_loop().time() + RETRY_FOR_S
    while True:
        try:
            return await attempt()
        except (TimeoutError, NotOwner, aiohttp.ClientError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise Unavailable(f"could not reach the owner of {what}: {exc}") from exc
            await asyncio.sleep(RETRY_PAUSE_S)


async def at_owner(
    partition: int, local: Callable[[], Awaitable[Any]], path: str, payload: Any, timeout_s: float = REQUEST_TIMEOUT_S,
    post: Callable[[str, Any, float], Awaitable[Any]] = post_json,
) -> Any:  # fmt: skip
    """`local()` if this worker owns the partition, else the owner's answer to `payload` on its internal `path`
    (through `post`); retried through a rebalance (what is asked must be safe to ask twice)."""

    async def attempt() -> Any:
        owner = partition_owners().get(partition)
        if owner is None:
            raise NotOwner(f"partition {partition} has no owner yet")
        return await local() if owner == this_worker_url() else await post(f"{owner}{path}", payload, timeout_s)

    return await _through_rebalance(attempt, f"partition {partition}")


async def read_ledger(requests: list[tuple[int, str]]) -> list[dict[str, Any] | None]:
    """Values of ledger keys wherever their partitions live, retried through a rebalance."""
    return await _through_rebalance(lambda: _read_once(requests), "a partition")


async def wait_for_values(keys: list[tuple[int, str]], timeout_s: float = RETRY_FOR_S) -> list[dict[str, Any]]:
    """Poll ledger keys until agents have written every one (the commands we sent were applied)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        values = await read_ledger(keys)
        missing = [key for key, value in zip(keys, values, strict=True) if value is None]
        if not missing:
            return values  # type: ignore[return-value]
        if asyncio.get_running_loop().time() > deadline:
            raise Unavailable(f"partition {missing[0][0]} has not applied the command within {timeout_s:.0f} s")
        await asyncio.sleep(0.01)


async def _read_once(requests: list[tuple[int, str]]) -> list[dict[str, Any] | None]:
    owners = partition_owners()
    me = this_worker_url()
    by_host: dict[str, list[int]] = defaultdict(list)
    for index, (partition, _) in enumerate(requests):
        owner = owners.get(partition)
        if owner is None:
            raise NotOwner(f"partition {partition} has no owner yet")
        by_host[owner].append(index)
    results: list[dict[str, Any] | None] = [None] * len(requests)

    async def fetch(host: str, indexes: list[int]) -> None:
        subset = [requests[i] for i in indexes]
        values = READS.read_values(subset) if host == me else await post_json(f"{host}/internal/entries", subset)
        for i, value in zip(indexes, values, strict=True):
            results[i] = value

    await asyncio.gather(*(fetch(host, indexes) for host, indexes in by_host.items()))
    return results


async def audit_all() -> list[dict[str, Any]]:
    """Every partition's audit, from whichever worker owns it: [{partition, meta, report}, ...]."""
    me = this_worker_url()
    hosts = set(partition_owners().values())
    if not hosts:
        raise Unavailable("no worker owns any partition yet")

    async def one(host: str) -> list[dict[str, Any]]:
        if host == me:
            return await local_audit()
        return await post_json(f"{host}/internal/audit", [], AUDIT_TIMEOUT_S)

    parts = await asyncio.gather(*(one(host) for host in sorted(hosts)))
    return sorted((item for part in parts for item in part), key=lambda item: item["partition"])


async def local_audit() -> list[dict[str, Any]]:
    return [
        {"partition": p, "meta": meta.to_dict(), "report": report.to_dict()}
        for p, (meta, report) in (await READS.audit_owned_partitions()).items()
    ]


#: where a coalesced request goes and how long it may take: (owner's URL, the submissions' wait, timeout)
Key = tuple[str, float, float]


class Submissions:
    """Submissions a worker hands to their partitions' owners, coalesced (`coalescer.Coalescer`): per owner's URL and
    wait, those that arrive within `linger_s` go in one internal request (at once at `max_items`), instead of one
    request each. A client's single transfer reaches the owner of its partition only one time in N with N workers,
    and each hand-over was an HTTP request on both sides for one transfer. Submissions are coalesced only with others
    that wait for their decision as long (`?wait=`): the owner answers a request when all its submissions are."""

    def __init__(self, linger_s: float, max_items: int = 256) -> None:
        self._coalescer: Coalescer[Key, dict[str, Any], Any] = Coalescer(self._deliver, linger_s, max_items)

    async def post(self, url: str, payload: dict[str, Any], timeout_s: float) -> Any:
        """The owner's answers to one partition's submission (`{"partition", "transactions", "wait_s"}`) posted to
        its `url` (`web.internal.submit`); raises NotOwner if it does not own the partition (any more),
        Backlogged if it holds too many undecided, Unavailable if it cannot commit now."""
        return await self._coalescer.submit((url, float(payload["wait_s"]), timeout_s), payload)

    @staticmethod
    async def _deliver(key: Key, payloads: list[dict[str, Any]]) -> list[Any]:
        url, _, timeout_s = key
        return [_submission_answer(item) for item in await post_json(url, payloads, timeout_s)]


def _submission_answer(item: dict[str, Any]) -> Any:
    """One submission's part of the owner's answer: its answers, or its own refusal as an exception."""
    if "answers" in item:
        return [(Verdict(verdict), body) for verdict, body in item["answers"]]
    if item["error"] == "backlogged":
        return Backlogged(item["detail"])
    if item["error"] == "unavailable":
        return Unavailable(item["detail"])
    return NotOwner(item["detail"])


SUBMISSIONS = Submissions(linger_s=SETTINGS.forward_linger_s)
