"""Every setting of a worker, read from the environment once, here and nowhere else.

Each field names its variable, its default and its meaning; README's configuration table is held to this list by
`tests/unit/test_settings.py`, and so is `k8s/configmap.yaml`. Faust reads none of them: the app hands Faust an empty
environment (`service.app`), so a variable Kubernetes injects (`WEB_PORT=tcp://...` for a Service named `web`) cannot
change a setting behind our back.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from payments_app.domain.routing import CONCURRENT, require_model

#: a default worked out from other settings or the host when the variable is unset (see `load_settings`)
DERIVED = "derived"


def setting(env: str, default: str | None, meaning: str) -> Any:
    """A field read from `env` (its text `default` when unset; None: no value), documented by `meaning`."""
    return field(metadata={"env": env, "default": default, "meaning": meaning})


@dataclass(frozen=True, slots=True)
class Settings:
    broker_url: str = setting(
        "BROKER_URL", "kafka://127.0.0.1:19092", "the Kafka bootstrap servers, `kafka://host:port[;host:port]`"
    )
    app_id: str = setting(
        "PAYMENTS_APP_ID", "payments", "prefixes the app's topics, consumer group and transactional ids"
    )
    model: str = setting(
        "PAYMENTS_MODEL",
        CONCURRENT,
        "`concurrent` (segments, one per partition) or `baseline` (an account in one partition)",
    )
    partitions: int = setting(
        "PAYMENTS_PARTITIONS",
        "8",
        "partitions of the transactions topic and of the ledger; caps the workers that apply",
    )
    replication_factor: int = setting("PAYMENTS_REPLICATION_FACTOR", "1", "replicas of each topic the worker creates")
    min_insync_replicas: int = setting(
        "PAYMENTS_MIN_INSYNC_REPLICAS",
        DERIVED,
        "replicas that must have a write before the broker acknowledges it; default all but one, at least 1",
    )
    create_topics: bool = setting(
        "PAYMENTS_CREATE_TOPICS", "true", "create the topics at start; `false`: only check them (Kubernetes, Strimzi)"
    )
    data_dir: Path = setting(  # noqa: RUF009 - `setting` is `field` with metadata
        "PAYMENTS_DATA_DIR", DERIVED, "the RocksDB stores; default `.data/worker` under the working directory"
    )
    web_bind: str = setting("PAYMENTS_WEB_BIND", "127.0.0.1", "the address both HTTP ports bind")
    web_port: int = setting("PAYMENTS_WEB_PORT", "6066", "the client API")
    internal_port: int = setting(
        "PAYMENTS_INTERNAL_PORT", "6067", "worker-to-worker routes and `/metrics`; never behind the client Service"
    )
    advertised_host: str = setting(
        "PAYMENTS_ADVERTISED_HOST", "127.0.0.1", "where the other workers reach this one's internal port"
    )
    admin_token: str | None = setting(
        "PAYMENTS_ADMIN_TOKEN", None, "the admin's bearer token, 32 characters or more; required"
    )
    instance_id: str = setting(
        "PAYMENTS_INSTANCE_ID",
        DERIVED,
        "static group membership id (and, with the app id, the transactional id); default host name and web port",
    )
    session_timeout_s: float = setting(
        "PAYMENTS_SESSION_TIMEOUT_S",
        "10",
        "Kafka's consumer session timeout: how long a silent worker keeps its partitions",
    )
    transaction_timeout_s: float = setting(
        "PAYMENTS_TRANSACTION_TIMEOUT_S",
        DERIVED,
        "how long the broker keeps a worker's transaction open before aborting it; default the session timeout",
    )
    standby_replicas: int = setting(
        "PAYMENTS_STANDBY_REPLICAS", "1", "workers that follow each partition's changelog, for a fast takeover"
    )
    max_waiting: int = setting(
        "PAYMENTS_MAX_WAITING", "50000", "submissions a worker holds undecided before it answers `429`"
    )
    forward_linger_ms: float = setting(
        "PAYMENTS_FORWARD_LINGER_MS",
        "2",
        "submissions for another worker's partitions wait this long to go out in one request",
    )
    group_records: int = setting(
        "PAYMENTS_GROUP_RECORDS", "64", "the most records one commit group (one Kafka transaction) holds"
    )
    group_commands: int = setting("PAYMENTS_GROUP_COMMANDS", "1000", "the most transactions one commit group holds")
    commit_spacing_ms: float = setting(
        "PAYMENTS_COMMIT_SPACING_MS", "5", "the least time between the starts of two commits (unless the group is full)"
    )
    stream_buffer_records: int = setting(
        "PAYMENTS_STREAM_BUFFER_RECORDS", "256", "records Faust buffers for the ledger agent, all partitions together"
    )
    rocksdb_block_cache_bytes: int = setting(
        "PAYMENTS_ROCKSDB_CACHE_BYTES", "16777216", "RocksDB block cache per store"
    )
    rocksdb_write_buffer_bytes: int = setting(
        "PAYMENTS_ROCKSDB_WRITE_BUFFER_BYTES", "16777216", "RocksDB write buffer (memtable) per store"
    )
    gc_threshold: int = setting(
        "PAYMENTS_GC_THRESHOLD", "50000", "allocations between two young-generation garbage collections"
    )
    audit_interval_s: float = setting(
        "PAYMENTS_AUDIT_INTERVAL_S",
        "10",
        "how often the background audit may run (it takes at most a tenth of the time)",
    )
    rebalance_interval_s: float = setting(
        "PAYMENTS_REBALANCE_INTERVAL_S",
        "1",
        "how often the reconciler evens out the segments of accounts that ran short",
    )
    assignment_mismatch_s: float = setting(
        "PAYMENTS_ASSIGNMENT_MISMATCH_S",
        "30",
        "routed partitions not consumed this long: the worker exits for a restart",
    )
    no_progress_exit_s: float = setting(
        "PAYMENTS_NO_PROGRESS_EXIT_S",
        "180",
        "records waiting and none applied this long: the worker exits for a restart",
    )

    @property
    def bootstrap_servers(self) -> str:
        """`broker_url` as Kafka clients take it: `host:port[,host:port]`."""
        return bootstrap_servers(self.broker_url)

    @property
    def commit_spacing_s(self) -> float:
        return self.commit_spacing_ms / 1000

    @property
    def forward_linger_s(self) -> float:
        return self.forward_linger_ms / 1000


def bootstrap_servers(broker_url: str) -> str:
    """`kafka://host:port[;host:port]` (Faust's form) as Kafka clients take it: `host:port,...`."""
    if not broker_url.startswith("kafka://"):
        raise ValueError(f"broker URL must look like kafka://host:port, got {broker_url!r}")
    return broker_url.removeprefix("kafka://").replace(";", ",")


def variables() -> dict[str, dataclasses.Field[Any]]:
    """Each setting's field by the variable it is read from."""
    return {f.metadata["env"]: f for f in dataclasses.fields(Settings)}


def _parse(kind: str, text: str) -> Any:
    """`text` as a field annotated `kind` (annotations are strings here: `from __future__ import annotations`)."""
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        return text.strip().lower() in ("1", "true", "yes")
    if kind == "Path":
        return Path(text)
    return text


def load_settings(environ: Mapping[str, str] = os.environ) -> Settings:
    """The settings from `environ`; an empty variable counts as unset."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        text = environ.get(f.metadata["env"]) or f.metadata["default"]
        values[f.name] = None if text is None or text == DERIVED else _parse(f.type, text)
    values["model"] = require_model(values["model"])
    if values["data_dir"] is None:
        values["data_dir"] = Path.cwd() / ".data" / "worker"
    if values["instance_id"] is None:
        values["instance_id"] = f"{socket.gethostname()}-{values['web_port']}"
    if values["transaction_timeout_s"] is None:
        values["transaction_timeout_s"] = values["session_timeout_s"]
    if values["min_insync_replicas"] is None:
        values["min_insync_replicas"] = min_insync_replicas(values["replication_factor"])
    return Settings(**values)


def min_insync_replicas(replication_factor: int) -> int:
    """Replicas that must have a write before it is acknowledged (acks=all): all but one, so writes go on while one
    broker is down, and an acknowledged write survives the loss of any one broker (one, with a single replica)."""
    return max(1, replication_factor - 1)


SETTINGS = load_settings()
