"""A network partition between one worker and the broker, under load: the worker keeps running but hears nothing
from Kafka for longer than its session timeout, the other worker takes its partitions over, then the network
heals. Afterwards every accepted transaction is decided exactly once, money is conserved, and a full restart reads
back the same statuses and balances.

The broker is the test's own: the session's broker has no listener advertised at a proxy, and without one a
client would learn the broker's real address from the metadata and bypass the proxy.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.common import RunSettings, id_in_partition
from devtools.cluster import WorkerProcess
from devtools.local_kafka import LocalKafka, free_port
from tests.integration.cluster import PARTITIONS, AppCluster, admin_session, call, wait_for
from tests.integration.ledger_checks import wait_all_decided
from tests.integration.netsplit import NetSplit
from tests.integration.test_crash import ACCOUNTS, Load, assert_kept_through_a_full_restart, counters, open_and_fund

pytestmark = pytest.mark.broker

#: how long the worker is cut off at least: past its session timeout (8 s in AppCluster), short of the 30 s after
#: which a commit that cannot complete stops the worker
CUT_S = 18.0
#: the most the other worker may take to own every partition and decide a deposit in each, from the cut
TAKEOVER_TIMEOUT_S = 45.0
REJOIN_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def split_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKafka, NetSplit]]:
    """Our own broker with a listener advertised at the proxy's port, and the proxy in front of that listener."""
    proxy_port = free_port()
    kafka = LocalKafka(data_dir=Path(tmp_path_factory.mktemp("split-kafka")), split_advertised_port=proxy_port)
    kafka.start()
    try:
        with NetSplit(proxy_port, kafka.split_port) as proxy:
            yield kafka, proxy
    finally:
        kafka.stop()


@pytest.fixture
def split_cluster(
    split_broker: tuple[LocalKafka, NetSplit], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[AppCluster]:
    """A fresh app on the split broker; workers stopped by pid afterwards, worker and broker logs shown on failure."""
    kafka, proxy = split_broker
    cluster = AppCluster(kafka.url, tmp_path)
    yield cluster
    proxy.heal()
    cluster.stop()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(cluster.logs())
        print("--- broker log tail ---", kafka.log_tail(), sep="\n")


async def test_the_split_listener_sends_clients_through_the_proxy_which_can_cut_them_off(
    split_broker: tuple[LocalKafka, NetSplit],
) -> None:
    """A client bootstrapping at the proxy is told the broker is at the proxy; a cut silences it, a heal does not
    leave it broken."""
    _, proxy = split_broker
    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{proxy.port}", request_timeout_ms=3000)
    await admin.start()
    try:
        brokers = (await admin.describe_cluster())["brokers"]
        assert [(b["host"], b["port"]) for b in brokers] == [("127.0.0.1", proxy.port)]
        proxy.cut()
        try:
            with pytest.raises(KafkaError):
                await admin.describe_cluster()
        finally:
            proxy.heal()
        assert (await admin.describe_cluster())["brokers"] == brokers
    finally:
        await admin.close()


def broker_ports(worker: WorkerProcess, kafka: LocalKafka, proxy: NetSplit) -> set[int]:
    """The ports of the broker and the proxy that the worker process has TCP connections to."""
    assert worker.pid is not None
    candidates = {kafka.port, kafka.controller_port, kafka.split_port, proxy.port}
    peers = {conn.raddr.port for conn in psutil.Process(worker.pid).net_connections(kind="tcp") if conn.raddr}
    return peers & candidates


async def owned(session: aiohttp.ClientSession, worker: WorkerProcess) -> set[int]:
    """The partitions the worker says it owns; none while it is joining or restoring (503), or restarting."""
    try:
        status, body = await call(session, "GET", f"{worker.url}/health", retry_for_s=0)
    except (TimeoutError, aiohttp.ClientError):
        return set()
    return set(body["partitions"]) if status == 200 else set()


async def steady(load: Load, stop: asyncio.Event, lanes: int = 4, pause_s: float = 0.5) -> None:
    """Batches until `stop` is set, each lane about two a second, so the load spans the cut and the heal
    (`Load.run` sends a fixed number of batches as fast as they are taken)."""
    numbers = itertools.count()

    async def lane() -> None:
        while not stop.is_set():
            await load.send(load.batch(next(numbers)))
            await asyncio.sleep(pause_s)

    await asyncio.gather(*(lane() for _ in range(lanes)))


async def probe_every_partition(
    session: aiohttp.ClientSession, worker: WorkerProcess, load: Load, prefix: str
) -> list[str]:
    """A deposit into each partition, through `worker`; its ids, once they are accepted."""
    ids = [id_in_partition(prefix, p, RunSettings(partitions=PARTITIONS)) for p in range(PARTITIONS)]
    for tx_id in ids:
        tx = {"id": tx_id, "account": ACCOUNTS[0], "amount": 1}
        status, body = await call(session, "POST", f"{worker.url}/deposits", tx)
        assert status in (200, 202) and body["amount"] == 1, body  # 200: a retry after a 503 had landed
        load.submitted[tx_id] = {**tx, "kind": "deposit"}
        load.accepted.add(tx_id)
    return ids


async def test_a_worker_cut_off_from_the_broker_past_its_session_timeout_is_replaced_and_nothing_is_lost_or_doubled(
    split_broker: tuple[LocalKafka, NetSplit], split_cluster: AppCluster
) -> None:
    """The proof that the partition happened: while the isolated worker's process runs on, the survivor owns every
    partition and decides a deposit in each. The rest is what test_crash.py checks after its faults."""
    kafka, proxy = split_broker
    survivor = split_cluster.add_worker()
    isolated = split_cluster.add_worker(broker_url=f"kafka://127.0.0.1:{proxy.port}")
    split_cluster.wait_ready()
    assert broker_ports(isolated, kafka, proxy) == {proxy.port}, "the isolated worker must reach Kafka via the proxy"
    everything = set(range(PARTITIONS))
    async with admin_session(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def shared_out() -> bool:
            """Each worker owns some partitions, and each partition one worker."""
            mine, theirs = await owned(session, survivor), await owned(session, isolated)
            return bool(mine) and bool(theirs) and not mine & theirs and mine | theirs == everything

        await wait_for(shared_out, timeout_s=60)
        load = Load(session, split_cluster.workers)
        await open_and_fund(session, survivor.url, load.submitted)
        funded = dict(load.submitted)
        stop = asyncio.Event()
        running = asyncio.create_task(steady(load, stop))
        while load.sent_batches < 8:
            await asyncio.sleep(0.05)
        fenced_before = (await counters(session, isolated.internal_url))["groups_fenced_total"]
        isolated_pid = isolated.pid
        isolated_owned = await owned(session, isolated)

        proxy.cut()
        cut_at = time.monotonic()
        batches_at_cut = load.sent_batches

        async def survivor_owns_everything() -> bool:
            return await owned(session, survivor) == everything

        await wait_for(survivor_owns_everything, timeout_s=TAKEOVER_TIMEOUT_S)
        takeover_s = time.monotonic() - cut_at
        probes = await probe_every_partition(session, survivor, load, "cut")
        await wait_all_decided(session, survivor.url, probes, timeout_s=TAKEOVER_TIMEOUT_S - takeover_s)
        deciding_s = time.monotonic() - cut_at
        # the partition, not a crash: the isolated worker's process ran through the takeover
        assert isolated.pid == isolated_pid and isolated.process is not None and isolated.process.poll() is None
        claimed_in_cut = await owned(session, isolated)
        # nor does it answer from its stale stores (its group lease ran out): a deposit the survivor applied in a
        # partition the isolated worker owned before the cut must not read as unknown there
        assert claimed_in_cut == set()
        stale_read = f"{isolated.url}/transactions/{probes[min(isolated_owned)]}"
        status, body = await call(session, "GET", stale_read, retry_for_s=0)
        assert status == 503 and body["error"] == "unavailable", body
        await asyncio.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
        batches_in_cut = load.sent_batches - batches_at_cut
        cut_s = time.monotonic() - cut_at
        proxy.heal()
        healed_at = time.monotonic()
        await wait_for(shared_out, timeout_s=REJOIN_TIMEOUT_S)
        rejoin_s = time.monotonic() - healed_at
        probes = await probe_every_partition(session, isolated, load, "healed")
        await wait_all_decided(session, isolated.url, probes)
        deciding_after_heal_s = time.monotonic() - healed_at
        await asyncio.sleep(3)
        stop.set()
        await running
        assert batches_in_cut > 0, "the survivor must take load while the other worker is cut off"
        fenced = (await counters(session, isolated.internal_url))["groups_fenced_total"]
        exits = [line for line in isolated.log_path.read_text().splitlines() if "worker exited with code" in line]
        print(
            f"\nnetsplit: cut {cut_s:.1f} s; the isolated worker owned {sorted(isolated_owned)} before it, and "
            f"claimed {sorted(claimed_in_cut)} during it; the survivor owned every partition {takeover_s:.1f} s after "
            f"the cut and decided a deposit in each at {deciding_s:.1f} s; {batches_in_cut} batches accepted during "
            f"the cut; after the heal the workers shared the partitions again at {rejoin_s:.1f} s and a deposit in "
            f"each, through the isolated worker, was decided at {deciding_after_heal_s:.1f} s; isolated worker: "
            f"groups fenced {fenced_before} -> {fenced} (counter of its current process), pid {isolated_pid} -> "
            f"{isolated.pid}, exits {exits}; {load.sent_batches} batches in all"
        )

        await assert_kept_through_a_full_restart(session, split_cluster, load, funded)
