"""Faults in the middle of a load: a worker SIGKILLed (restarted, or its partitions taken over), paused past its
session timeout, or its transactional producer fenced while it keeps its partitions. Afterwards every accepted
transaction is decided exactly once and money is conserved."""

from __future__ import annotations

import asyncio
import random
import socket

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from devtools.cluster import WorkerProcess
from payments_app.settings import bootstrap_servers
from tests.integration.cluster import AppCluster, admin_session, call
from tests.integration.ledger_checks import assert_invariants, statuses, wait_all_decided

pytestmark = pytest.mark.broker

ACCOUNTS = [f"c-{n}" for n in range(12)]
BATCHES = 60
BATCH_SIZE = 50


class Load:
    """Arrays of transfers sent to whichever worker answers; a batch that fails is sent again (same ids)."""

    def __init__(self, session: aiohttp.ClientSession, workers: list[WorkerProcess], batches: int = BATCHES) -> None:
        self.session = session
        self.workers = workers
        self.rng = random.Random(7)
        self.submitted: dict[str, dict] = {}
        self.accepted: set[str] = set()
        self.sent_batches = 0
        self.batches = batches

    def batch(self, b: int) -> list[dict]:
        items = []
        for i in range(BATCH_SIZE):
            payer, payee = self.rng.sample(ACCOUNTS, 2)
            items.append({"id": f"x-{b}-{i}", "payer": payer, "payee": payee, "amount": self.rng.randint(1, 300)})
        return items

    async def send(self, items: list[dict]) -> None:
        """Until every item is taken: an item refused (its owner out of reach) is sent again, with the same id."""
        for item in items:
            self.submitted[item["id"]] = item
        for _ in range(200):
            alive = [w for w in self.workers if w.process is not None]
            url = self.rng.choice(alive).url
            try:
                status, body = await call(self.session, "POST", f"{url}/transfers", items, retry_for_s=1.0)
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.2)
                continue
            if status in (200, 202):  # 200: a retry whose first try had landed, every item decided since
                assert all(item["status"] != "conflict" for item in body), body
                refused = {item["id"] for item in body if item["status"] == "refused"}
                self.accepted.update(item["id"] for item in body if item["id"] not in refused)
                items = [item for item in items if item["id"] in refused]
                if not items:
                    self.sent_batches += 1
                    return
            else:
                assert status == 503, body
            await asyncio.sleep(0.2)
        raise AssertionError("no worker took a batch's every item for a long time")

    async def run(self, concurrency: int = 4) -> None:
        queue = [self.batch(b) for b in range(self.batches)]

        async def lane(lane_no: int) -> None:
            for items in queue[lane_no::concurrency]:
                await self.send(items)

        await asyncio.gather(*(lane(n) for n in range(concurrency)))


async def open_and_fund(session: aiohttp.ClientSession, url: str, submitted: dict[str, dict]) -> None:
    for account in ACCOUNTS:
        assert (await call(session, "POST", f"{url}/accounts", {"id": account}))[0] == 201
        for n in range(4):
            tx = {"id": f"f-{account}-{n}", "account": account, "amount": 1_000}
            assert (await call(session, "POST", f"{url}/deposits", tx))[0] == 202
            submitted[tx["id"]] = {**tx, "kind": "deposit"}
    await wait_all_decided(session, url, list(submitted))


async def kill_mid_load(cluster: AppCluster, restart: bool) -> None:
    cluster.add_worker()
    cluster.add_worker()
    cluster.wait_ready()
    survivor, victim = cluster.workers
    async with admin_session(timeout=aiohttp.ClientTimeout(total=30)) as session:
        load = Load(session, cluster.workers)
        await open_and_fund(session, survivor.url, load.submitted)
        funded = dict(load.submitted)
        running = asyncio.create_task(load.run())
        while load.sent_batches < BATCHES // 3:
            await asyncio.sleep(0.05)
        restored_before = (await counters(session, survivor.internal_url))["changelog_records_restored_total"]
        victim.kill()
        if restart:
            await asyncio.sleep(1.0)
            victim.start()
        await running
        if restart:
            await asyncio.to_thread(victim.wait_ready)
        assert load.sent_batches == BATCHES
        accepted = load.accepted | set(funded)
        await assert_invariants(session, survivor.url, load.submitted, ACCOUNTS, accepted)
        if restart:
            await assert_invariants(session, victim.url, load.submitted, ACCOUNTS, accepted)
        else:
            # the survivor followed the victim's partitions as their standby: the takeover restored only a tail
            after = await counters(session, survivor.internal_url)
            assert after["standby_records_applied_total"] > 0
            assert after["changelog_records_restored_total"] - restored_before < after["standby_records_applied_total"]


async def test_sigkill_and_restart_mid_load(cluster: AppCluster) -> None:
    await kill_mid_load(cluster, restart=True)


async def counters(session: aiohttp.ClientSession, url: str) -> dict[str, int]:
    status, body = await call(session, "GET", f"{url}/internal/progress")
    assert status == 200, body
    return body["metrics"]


async def test_sigkill_and_takeover_by_the_standby(cluster: AppCluster) -> None:
    await kill_mid_load(cluster, restart=False)


async def snapshot(session: aiohttp.ClientSession, url: str, ids: list[str]) -> tuple[dict, dict]:
    """Every status and every account's money, as one worker answers them: its balance and what is in flight
    between its segments (the reconciler may be moving some at either moment)."""
    records = await statuses(session, url, ids)
    money = {}
    for account in ACCOUNTS:
        status, body = await call(session, "GET", f"{url}/accounts/{account}")
        assert status == 200, body
        money[account] = body["balance"] + body["in_flight"]
    return records, money


async def test_a_worker_paused_past_its_session_timeout_writes_nothing_once_fenced(cluster: AppCluster) -> None:
    """Each worker in turn freezes past its session timeout (8 s here) under load, while
    the other takes its partitions over; then a full restart reads back the same statuses and balances."""
    cluster.add_worker()
    cluster.add_worker()
    cluster.wait_ready()
    first, second = cluster.workers
    async with admin_session(timeout=aiohttp.ClientTimeout(total=5)) as session:
        load = Load(session, cluster.workers, batches=90)
        await open_and_fund(session, first.url, load.submitted)
        funded = dict(load.submitted)
        running = asyncio.create_task(load.run())
        for victim, after in ((first, 15), (second, 45)):
            while load.sent_batches < after and not running.done():
                await asyncio.sleep(0.05)
            victim.pause()
            await asyncio.sleep(14)
            victim.resume()
        await running
        await assert_kept_through_a_full_restart(session, cluster, load, funded)


async def test_a_worker_whose_producer_is_fenced_opens_its_partitions_again(cluster: AppCluster) -> None:
    """Its transactional id taken over under load (as a broker that aborted its transaction at the timeout, or a
    second process with its identity, would): the commit under way is dropped, the worker starts a new producer
    and opens the partitions it still owns again, without exiting, and nothing is lost or applied twice."""
    worker = cluster.add_worker().wait_ready()
    cluster.wait_ready()
    async with admin_session(timeout=aiohttp.ClientTimeout(total=5)) as session:
        load = Load(session, cluster.workers, batches=40)
        await open_and_fund(session, worker.url, load.submitted)
        funded = dict(load.submitted)
        pid, before = worker.pid, await counters(session, worker.internal_url)
        running = asyncio.create_task(load.run())
        while load.sent_batches < 10:
            await asyncio.sleep(0.05)
        await take_transactional_id(cluster, worker)
        await running
        # Idle, fenced again, then one last batch: the records its old sessions were handed are the only ones
        # left, and the partitions opened again must apply them with nothing more arriving.
        await wait_all_decided(session, worker.url, list(load.submitted))
        await take_transactional_id(cluster, worker)
        await load.send(load.batch(load.batches))
        after = await counters(session, worker.internal_url)
        assert worker.pid == pid and worker.process is not None and worker.process.poll() is None
        assert after["groups_fenced_total"] > before["groups_fenced_total"]
        assert "its producer was fenced; opening it again" in worker.log_path.read_text()
        await assert_kept_through_a_full_restart(session, cluster, load, funded)
    # the fenced producers' own futures were seen, so none is logged as an ERROR when collected (at the latest
    # when the first incarnation stopped for the restart)
    assert "Future exception was never retrieved" not in worker.log_path.read_text()


async def take_transactional_id(cluster: AppCluster, worker: WorkerProcess) -> None:
    """InitProducerId with the worker's transactional id: the worker's producer epoch is over."""
    transactional_id = f"{cluster.app_id}-ledger-{socket.gethostname()}-{worker.web_port}"
    usurper = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(cluster.broker_url), transactional_id=transactional_id
    )
    await usurper.start()
    await usurper.stop()


async def assert_kept_through_a_full_restart(
    session: aiohttp.ClientSession, cluster: AppCluster, load: Load, funded: dict[str, dict]
) -> None:
    """Every worker answers the invariants over what was accepted, and after all of them are stopped and started
    again, every status and balance reads back the same from each."""
    accepted = load.accepted | set(funded)
    ids = list(load.submitted)
    for worker in cluster.workers:
        await assert_invariants(session, worker.url, load.submitted, ACCOUNTS, accepted)
    before = await snapshot(session, cluster.workers[-1].url, ids)
    cluster.stop()
    for worker in cluster.workers:
        worker.start()
    cluster.wait_ready()
    for worker in cluster.workers:
        assert await snapshot(session, worker.url, ids) == before
