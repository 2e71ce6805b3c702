"""Shared fixtures: one real Kafka broker for the whole test session, started and stopped by us."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from payments_app.local_kafka import LocalKafka, configured_broker_url


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
