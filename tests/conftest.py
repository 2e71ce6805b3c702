"""Shared fixtures: one real Kafka broker for the whole test session, started and stopped by us."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from devtools.local_kafka import LocalKafka, configured_broker_url
from tests.integration.cluster import AppCluster, admin_session, running_cluster


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real broker: the configured BROKER_URL, or our own single-node KRaft broker on free ports."""
    configured = configured_broker_url()
    if configured:
        yield configured
        return
    kafka = LocalKafka(data_dir=Path(tmp_path_factory.mktemp("kafka")))
    kafka.start()
    try:
        yield kafka.url
    finally:
        kafka.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """Remember each phase's report on the test item, so fixtures can print logs only when a test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with admin_session() as client:
        yield client


@pytest.fixture
def cluster(broker_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[AppCluster]:
    """A fresh app on the shared broker; its workers are stopped after the test, their logs shown on failure."""
    test_cluster = AppCluster(broker_url, tmp_path)
    yield test_cluster
    test_cluster.stop()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(test_cluster.logs())


@pytest.fixture(scope="module")
def module_cluster(
    broker_url: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[AppCluster]:
    """Two workers shared by the tests of one module (the API's), stopped after it; their logs on a failure."""
    with running_cluster(broker_url, tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])) as cluster:
        yield cluster


@pytest.fixture
def urls(module_cluster: AppCluster) -> list[str]:
    return [worker.url for worker in module_cluster.workers]
