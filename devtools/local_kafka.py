"""The project's own Apache Kafka (KRaft) for development, tests and the benchmark: one node, or three.

There is no Kafka package or Docker on our machines, but Java and Maven are: the broker's jars come from
Maven Central once (a tiny pom beside this module), then each node runs as a plain `java` process that
this module starts, waits for, and stops by its own pid. A node is broker and controller in one JVM; three of
them (`LocalKafkaCluster`) form one controller quorum and keep every topic on all three, as production does.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devtools.processes import ChildSignals, die_with_parent, stop_process, stop_processes
from payments_app.settings import min_insync_replicas

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POM_PATH = Path(__file__).resolve().parent / "kafka" / "pom.xml"
DEFAULT_JARS_DIR = PROJECT_ROOT / ".kafka" / "jars"
JARS_MARKER = ".complete"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
#: the name of the optional client listener advertised at another port (see LocalKafka.split_advertised_port)
SPLIT_LISTENER = "SPLIT"

LOG4J2_PROPERTIES = """\
rootLogger.level=INFO
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=WARN
logger.apache.name=org.apache.kafka
logger.apache.level=WARN
logger.started.name=kafka.server.KafkaRaftServer
logger.started.level=INFO
"""


class KafkaSetupError(RuntimeError):
    """Raised when the local broker cannot be fetched, started or reached; the message says why."""


def free_port() -> int:
    """Ask the OS for a free TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_tool(name: str) -> str:
    """Return the path of a command-line tool or explain what is missing."""
    path = shutil.which(name)
    if path is None:
        raise KafkaSetupError(
            f"`{name}` was not found on PATH: the local Kafka broker needs Java 17+ and Maven "
            "(Debian: apt-get install openjdk-17-jre-headless maven), or set BROKER_URL=kafka://host:port "
            "to use an existing broker."
        )
    return path


def ensure_jars(jars_dir: Path = DEFAULT_JARS_DIR) -> Path:
    """Fetch Kafka's broker jars into `jars_dir` once, with Maven; later calls return at once."""
    if (jars_dir / JARS_MARKER).exists():
        return jars_dir
    require_tool("java")
    mvn = require_tool("mvn")
    jars_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM_PATH),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={jars_dir}",
        "-DincludeScope=runtime",
    ]
    print(f"fetching Apache Kafka jars into {jars_dir} ...", flush=True)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KafkaSetupError(
            f"Maven could not fetch Kafka's jars (exit {result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    if not any(jars_dir.glob("kafka_2.13-*.jar")):
        raise KafkaSetupError(f"Maven ran but no kafka_2.13 jar is in {jars_dir}")
    (jars_dir / JARS_MARKER).write_text("ok\n")
    return jars_dir


def _port_open(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


async def _cluster_answers(bootstrap: str) -> bool:
    """True when the broker answers a metadata request and lists itself."""
    from aiokafka.admin import AIOKafkaAdminClient

    if not _port_open(bootstrap):
        return False

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    finally:
        await admin.close()


def wait_until_ready(bootstrap: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll the broker with metadata requests until it answers, or raise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise KafkaSetupError("the Kafka broker process exited during start-up")
        if asyncio.run(_cluster_answers(bootstrap)):
            return
        time.sleep(0.5)
    raise KafkaSetupError(f"the Kafka broker at {bootstrap} did not answer within {timeout_s:.0f} s")


@dataclass
class LocalKafka(ChildSignals):
    """One KRaft node (broker and controller in one JVM) on 127.0.0.1: alone, or one of a `LocalKafkaCluster`.
    `kill`, `pause` and `resume` signal its JVM (a killed broker recovers its logs at the next start)."""

    data_dir: Path
    port: int = 0
    controller_port: int = 0
    heap: str = "512m"
    jars_dir: Path = DEFAULT_JARS_DIR
    node_id: int = 1
    #: the controller quorum, `id@host:port,...` (`LocalKafkaCluster`); empty: this node alone
    voters: str = ""
    #: the KRaft cluster id its storage is formatted with (the same on every node of a cluster); empty: a new one
    cluster_id: str = ""
    #: replicas of Kafka's own topics (consumer offsets, transaction state) and of a topic created without a factor
    replication_factor: int = 1
    #: when set, a second client listener (SPLIT_LISTENER, on `split_port`) that tells its clients the broker is at
    #: this port instead: a client bootstrapping at a proxy there keeps every connection on the proxy (netsplit tests)
    split_advertised_port: int | None = None
    split_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def split_bootstrap(self) -> str:
        """Where the split listener is bound: the address a proxy in front of it forwards to."""
        return f"127.0.0.1:{self.split_port}"

    @property
    def url(self) -> str:
        """The broker URL in the form Faust takes."""
        return f"kafka://{self.bootstrap}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> LocalKafka:
        """Fetch jars if needed, write config, format storage once, start the JVM and wait for it."""
        self.launch()
        self.wait_ready(timeout_s)
        return self

    def reserve_ports(self) -> None:
        """Pick the free ports not chosen yet (a cluster needs every node's controller port before any starts)."""
        self.port = self.port or free_port()
        self.controller_port = self.controller_port or free_port()
        if self.split_advertised_port is not None:
            self.split_port = self.split_port or free_port()

    def launch(self) -> None:
        """Start the JVM without waiting: the nodes of a cluster answer only once a quorum of them runs."""
        if self.process is not None:
            raise KafkaSetupError("this broker is already running")
        java = require_tool("java")
        ensure_jars(self.jars_dir)
        self.reserve_ports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        classpath = f"{self.jars_dir}/*"
        if not (self.data_dir / "logs" / "meta.properties").exists():
            self._format(java, classpath, config)
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES)
        cmd = [
            java,
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(config),
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        log.close()

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until the broker answers a metadata request; stop it and raise, with its log's tail, if it does not."""
        try:
            wait_until_ready(self.bootstrap, timeout_s, alive=self.running)
        except KafkaSetupError as exc:
            self.stop()
            raise KafkaSetupError(f"{exc}\n--- broker log tail ---\n{self.log_tail()}") from exc

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; always by our own pid."""
        proc, self.process = self.process, None
        stop_process(proc, STOP_TIMEOUT_S)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no broker log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _write_config(self) -> Path:
        listeners = {"PLAINTEXT": self.port, "CONTROLLER": self.controller_port}
        advertised = {"PLAINTEXT": self.port}
        if self.split_advertised_port is not None:
            listeners[SPLIT_LISTENER] = self.split_port
            advertised[SPLIT_LISTENER] = self.split_advertised_port
        replicas, min_isr = self.replication_factor, min_insync_replicas(self.replication_factor)
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}",
            "listeners": ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items()),
            "advertised.listeners": ",".join(f"{name}://127.0.0.1:{port}" for name, port in advertised.items()),
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": ",".join(f"{name}:PLAINTEXT" for name in listeners),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "default.replication.factor": str(replicas),
            "min.insync.replicas": str(min_isr),
            "unclean.leader.election.enable": "false",
            "offsets.topic.replication.factor": str(replicas),
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min_isr),
            # a worker's transaction left open (it died or paused mid-commit) is aborted within a second of its
            # timeout, not ten: the next owner of its partitions waits for that (runtime.ledger_writer)
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "group.initial.rebalance.delay.ms": "0",
            "log.flush.interval.messages": str(2**62),
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        return path

    def _format(self, java: str, classpath: str, config: Path) -> None:
        cmd = [java, "-cp", classpath, "kafka.tools.StorageTool", "format"]
        cmd += ["-t", self.cluster_id or new_cluster_id(), "-c", str(config)]
        if not self.voters:
            cmd.append("--standalone")
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise KafkaSetupError(f"formatting Kafka storage failed:\n{result.stdout}\n{result.stderr}")


@dataclass
class LocalKafkaCluster:
    """`size` KRaft nodes on 127.0.0.1 forming one controller quorum, as `k8s/kafka.yaml` deploys three: Kafka's
    own topics and any topic created without a factor get a replica on each node (at most 3), and acks=all writes
    need all but one of them (`min_insync_replicas`), so they go on while one node is down.

    Node `n` (from 1) keeps its data in `data_dir/node-n`; `ports` gives each node's client and controller port
    (free ones when left out). A node stopped, killed or paused is started or resumed with the same command line.
    """

    data_dir: Path
    size: int = 3
    ports: list[tuple[int, int]] = field(default_factory=list)
    heap: str = "512m"
    nodes: list[LocalKafka] = field(init=False)

    def __post_init__(self) -> None:
        cluster_id = new_cluster_id()  # used only by a node whose storage is not formatted yet
        ports = self.ports or [(0, 0)] * self.size
        self.nodes = [
            LocalKafka(self.data_dir / f"node-{n}", port, controller_port, self.heap, node_id=n,
                       cluster_id=cluster_id, replication_factor=min(self.size, 3))
            for n, (port, controller_port) in enumerate(ports, start=1)
        ]  # fmt: skip
        for node in self.nodes:
            node.reserve_ports()
        voters = ",".join(f"{node.node_id}@127.0.0.1:{node.controller_port}" for node in self.nodes)
        for node in self.nodes:
            node.voters = voters

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def url(self) -> str:
        """Every node's client listener, in the form Faust takes (a client reaches the cluster while any answers)."""
        return "kafka://" + ";".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        return self.nodes[node_id - 1]

    def start(self, timeout_s: float = START_TIMEOUT_S) -> LocalKafkaCluster:
        """Start every node, then wait for each: none answers before a quorum of them runs."""
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_ready(timeout_s)
        except KafkaSetupError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Every node at once (see `stop_processes`)."""
        procs = [node.process for node in self.nodes]
        for node in self.nodes:
            node.process = None
        stop_processes(procs, STOP_TIMEOUT_S)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"--- Kafka node {node.node_id} log tail ---\n{node.log_tail(lines)}" for node in self.nodes)

    def __enter__(self) -> LocalKafkaCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, URL-safe base64, never starting with "-" (the storage tool would read
    it as an option; Kafka's own Uuid.randomUuid skips those too). One id in 64 used to fail the format."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def configured_broker_url() -> str | None:
    """The broker the operator configured (BROKER_URL), or None to start our own."""
    url = os.environ.get("BROKER_URL", "").strip()
    return url or None
