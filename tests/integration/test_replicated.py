"""Three Kafka nodes, every topic on all three: the node that leads most of the app's partitions is SIGKILLed under
load, a worker is started again while it is down, and the node is started again. No worker stops by itself, every
partition decides again, and afterwards every accepted transaction is decided exactly once and money is conserved.
(`make soak` runs the longer faults: a paused node, two nodes down, a worker and a node together;
`bench/soak_replicated.py`.)"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from devtools.local_kafka import LocalKafka, LocalKafkaCluster
from tests.integration.cluster import AppCluster, admin_session, wait_for
from tests.integration.ledger_checks import wait_all_decided
from tests.integration.test_crash import Load, assert_kept_through_a_full_restart, open_and_fund
from tests.integration.test_netsplit import probe_every_partition, steady

pytestmark = pytest.mark.broker

#: the controller fences a silent node after 9 s (KRaft's broker session), then the leaders move
DECIDING_AGAIN_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaCluster]:
    kafka = LocalKafkaCluster(Path(tmp_path_factory.mktemp("kafka-3")))
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def replicated_cluster(
    three_nodes: LocalKafkaCluster, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[AppCluster]:
    """A fresh app whose topics have three replicas; worker and Kafka logs shown on failure."""
    cluster = AppCluster(three_nodes.url, tmp_path, extra_env={"PAYMENTS_REPLICATION_FACTOR": "3"})
    yield cluster
    cluster.stop()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(cluster.logs())
        print(three_nodes.log_tail())


async def busiest_leader(kafka: LocalKafkaCluster, topics: list[str]) -> LocalKafka:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    leaders = Counter(p["leader"] for topic in described for p in topic["partitions"])
    assert all(len(p["replicas"]) == 3 for topic in described for p in topic["partitions"]), described
    return kafka.node(leaders.most_common(1)[0][0])


def exits(cluster: AppCluster) -> list[str]:
    """The workers' own exits: each restart the supervisor made, and each critical line saying why."""
    return [line for w in cluster.workers for line in w.log_path.read_text(errors="replace").splitlines()
            if "worker exited with code" in line or "[CRITICAL]" in line]  # fmt: skip


async def test_the_leading_node_sigkilled_under_load_loses_nothing_and_stops_no_worker(
    three_nodes: LocalKafkaCluster, replicated_cluster: AppCluster
) -> None:
    cluster = replicated_cluster
    first, second = cluster.add_worker(), cluster.add_worker()
    cluster.wait_ready()
    async with admin_session(timeout=aiohttp.ClientTimeout(total=30)) as session:
        load = Load(session, cluster.workers)
        await open_and_fund(session, first.url, load.submitted)
        funded = dict(load.submitted)
        stop = asyncio.Event()
        running = asyncio.create_task(steady(load, stop))
        while load.sent_batches < 8:
            await asyncio.sleep(0.05)
        node = await busiest_leader(three_nodes, [f"{cluster.app_id}-transactions",
                                                  f"{cluster.app_id}-ledger-changelog-v4"])  # fmt: skip
        node.kill()
        killed_at = time.monotonic()
        probes = await probe_every_partition(session, second, load, "killed")
        await wait_all_decided(session, second.url, probes, timeout_s=DECIDING_AGAIN_TIMEOUT_S)
        deciding_s = time.monotonic() - killed_at
        second.kill()  # a worker started while the node is down (Faust once asked only the first node it knew)
        second.start()
        await asyncio.to_thread(second.wait_ready)
        probes = await probe_every_partition(session, second, load, "restarted")
        await wait_all_decided(session, second.url, probes, timeout_s=DECIDING_AGAIN_TIMEOUT_S)
        await asyncio.to_thread(node.start)
        probes = await probe_every_partition(session, first, load, "back")
        await wait_all_decided(session, first.url, probes, timeout_s=DECIDING_AGAIN_TIMEOUT_S)
        stop.set()
        await running
        assert exits(cluster) == []
        await assert_kept_through_a_full_restart(session, cluster, load, funded)
    print(f"node {node.node_id} SIGKILLed: every partition deciding again after {deciding_s:.1f} s")


async def test_every_topic_of_the_app_is_on_three_nodes_with_two_in_sync_for_a_write(
    three_nodes: LocalKafkaCluster, replicated_cluster: AppCluster
) -> None:
    replicated_cluster.add_worker()
    replicated_cluster.wait_ready()
    app = replicated_cluster.app_id
    topics = [f"{app}-transactions", f"{app}-ledger-changelog-v4", f"{app}-tokens"]
    admin = AIOKafkaAdminClient(bootstrap_servers=three_nodes.bootstrap)
    await admin.start()
    try:

        async def described() -> bool:
            return len(await admin.describe_topics(topics)) == 3

        await wait_for(described, timeout_s=30)
        for topic in await admin.describe_topics([*topics, "__consumer_offsets", "__transaction_state"]):
            assert {len(p["replicas"]) for p in topic["partitions"]} == {3}, topic
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    finally:
        await admin.close()
    for response in configs:
        for _, _, _, name, entries in response.resources:
            assert ("min.insync.replicas", "2") in [(entry[0], entry[1]) for entry in entries], name
