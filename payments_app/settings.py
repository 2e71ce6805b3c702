"""Settings from the environment, read once, with the defaults `make run` uses.

Faust reads none of them: the app hands Faust an empty environment (`app.py`), so a variable Kubernetes injects
(`WEB_PORT=tcp://...` for a Service named `web`) cannot change a setting behind our back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from payments_app.domain.routing import CONCURRENT, require_model


@dataclass(frozen=True, slots=True)
class Settings:
    app_id: str
    model: str
    broker_url: str
    partitions: int
    replication_factor: int
    data_dir: Path
    web_bind: str
    web_port: int  # the client API
    internal_port: int  # worker-to-worker routes and /metrics: never behind the client Service
    advertised_host: str  # where the other workers reach this one's internal port
    admin_token: str | None  # required by a worker; checked when it starts (`web.auth`)
    create_topics: bool  # False in Kubernetes: the topics come from Strimzi and are only checked
    rocksdb_block_cache_bytes: int
    rocksdb_write_buffer_bytes: int
    session_timeout_s: float
    #: a worker paused in a Kafka transaction holds up the next owner of its partitions at most this long
    transaction_timeout_s: float
    forward_linger_ms: float  # submissions for another worker's partitions, coalesced per owner (`forwarding`)
    max_waiting: int  # submissions a worker holds taken and undecided before it answers 429 (`intake`)
    standby_replicas: int
    stream_buffer_records: int


def load_settings() -> Settings:
    session_timeout_s = float(os.environ.get("PAYMENTS_SESSION_TIMEOUT_S", "10"))
    return Settings(
        app_id=os.environ.get("PAYMENTS_APP_ID", "payments"),
        model=require_model(os.environ.get("PAYMENTS_MODEL", CONCURRENT)),
        broker_url=os.environ.get("BROKER_URL") or "kafka://127.0.0.1:19092",
        partitions=int(os.environ.get("PAYMENTS_PARTITIONS", "8")),
        replication_factor=int(os.environ.get("PAYMENTS_REPLICATION_FACTOR", "1")),
        data_dir=Path(os.environ.get("PAYMENTS_DATA_DIR") or Path.cwd() / ".data" / "worker"),
        web_bind=os.environ.get("PAYMENTS_WEB_BIND", "127.0.0.1"),
        web_port=int(os.environ.get("PAYMENTS_WEB_PORT", "6066")),
        internal_port=int(os.environ.get("PAYMENTS_INTERNAL_PORT", "6067")),
        advertised_host=os.environ.get("PAYMENTS_ADVERTISED_HOST", "127.0.0.1"),
        admin_token=os.environ.get("PAYMENTS_ADMIN_TOKEN") or None,
        create_topics=os.environ.get("PAYMENTS_CREATE_TOPICS", "true").lower() in ("1", "true", "yes"),
        rocksdb_block_cache_bytes=int(os.environ.get("PAYMENTS_ROCKSDB_CACHE_BYTES", str(16 * 2**20))),
        rocksdb_write_buffer_bytes=int(os.environ.get("PAYMENTS_ROCKSDB_WRITE_BUFFER_BYTES", str(16 * 2**20))),
        session_timeout_s=session_timeout_s,
        transaction_timeout_s=float(os.environ.get("PAYMENTS_TRANSACTION_TIMEOUT_S", str(session_timeout_s))),
        forward_linger_ms=float(os.environ.get("PAYMENTS_FORWARD_LINGER_MS", "2")),
        max_waiting=int(os.environ.get("PAYMENTS_MAX_WAITING", "50000")),
        standby_replicas=int(os.environ.get("PAYMENTS_STANDBY_REPLICAS", "1")),
        stream_buffer_records=int(os.environ.get("PAYMENTS_STREAM_BUFFER_RECORDS", "256")),
    )


SETTINGS = load_settings()
