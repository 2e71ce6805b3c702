"""The Kubernetes manifests are valid and agree with the code.

Valid: every Kubernetes object against the API schemas of 1.30 and later in strict mode (kubernetes-validate),
every Strimzi resource against Strimzi's own model (k8s/check/StrimziCheck.java, which must also fail on broken
copies). Agreeing: the settings they pass are read by the app, the probes hit routes it serves, the topics are the
ones it uses, and ports, labels and selectors line up between the StatefulSet, Services, NetworkPolicy and PDB.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import faust
import kubernetes_validate
import pytest
import yaml
from faust.assignor.leader_assignor import LeaderAssignor
from kubernetes_validate import utils as kv_utils

import payments_app.service.topics
from payments_app.runtime.ledger_writer import COMMIT_TIMEOUT_MARGIN_S
from payments_app.settings import SETTINGS
from payments_app.worker import app

ROOT = Path(__file__).parents[2]
K8S = ROOT / "k8s"
CHECKER = K8S / "check" / "StrimziCheck.java"
CHECKER_POM = K8S / "check" / "pom.xml"
#: the resolved classpath is cached beside Kafka's jars (.kafka/ is ignored), keyed by the pom's content
CLASSPATH_CACHE = ROOT / ".kafka" / "strimzi-check"
STRIMZI_GROUP = "kafka.strimzi.io/"
MIN_KUBERNETES = (1, 30)
ADMIN_SECRET = ("payments-admin", "token")
ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")

FILES = sorted(K8S.glob("*.yaml"))
DOCS = [doc for path in FILES for doc in yaml.safe_load_all(path.read_text()) if doc]
APP_SOURCES = [path for package in ("payments_app", "web", "tables") for path in (ROOT / package).rglob("*.py")]


def names_in_code() -> set[str]:
    """Names the app's code looks up: `os.environ.get("X")`, `os.getenv("X")`, `environ["X"]`, any `f("X", ...)`."""
    names = set()
    for path in APP_SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and node.args:
                key = node.args[0]
            elif isinstance(node, ast.Subscript):
                key = node.slice
            else:
                continue
            if isinstance(key, ast.Constant) and isinstance(key.value, str) and ENV_NAME.fullmatch(key.value):
                names.add(key.value)
    return names


def of_kind(kind: str) -> list[dict]:
    return [doc for doc in DOCS if doc["kind"] == kind]


def one(kind: str) -> dict:
    (doc,) = of_kind(kind)
    return doc


def config() -> dict[str, str]:
    return one("ConfigMap")["data"]


def pod_spec() -> dict:
    return one("StatefulSet")["spec"]["template"]["spec"]


def worker() -> dict:
    (container,) = pod_spec()["containers"]
    return container


def env() -> dict[str, dict]:
    return {item["name"]: item for item in worker()["env"]}


def headless_service() -> dict:
    (service,) = [s for s in of_kind("Service") if s["spec"].get("clusterIP") == "None"]
    return service


def client_service() -> dict:
    (service,) = [s for s in of_kind("Service") if s["spec"].get("clusterIP") != "None"]
    return service


def worker_labels() -> dict[str, str]:
    return one("StatefulSet")["spec"]["template"]["metadata"]["labels"]


def selects_workers(selector: dict) -> bool:
    """Whether a matchLabels selector picks the worker pods (and is not empty)."""
    labels = selector.get("matchLabels", {})
    return bool(labels) and labels.items() <= worker_labels().items() and not selector.get("matchExpressions")


def container_port(name: str) -> int:
    return next(p["containerPort"] for p in worker()["ports"] if p["name"] == name)


def kafka_topics() -> dict[str, dict]:
    return {t["spec"].get("topicName", t["metadata"]["name"]): t for t in of_kind("KafkaTopic")}


# ---- schemas ----


def kubernetes_versions() -> list[str]:
    versions = sorted(set(kv_utils.all_versions()), key=lambda v: tuple(int(x) for x in v.split(".")))
    return [v for v in versions if tuple(int(x) for x in v.split(".")[:2]) >= MIN_KUBERNETES]


def test_every_kubernetes_object_is_valid_in_strict_mode_for_1_30_and_later() -> None:
    versions = kubernetes_versions()
    assert versions[0].startswith("1.30") and len(versions) >= 8, versions
    objects = [doc for doc in DOCS if not doc["apiVersion"].startswith(STRIMZI_GROUP)]
    assert {doc["kind"] for doc in objects} >= {
        "Namespace",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceAccount",
    }
    for doc in objects:
        for version in versions:
            kubernetes_validate.validate(doc, version, strict=True)


def test_strict_kubernetes_validation_refuses_an_unknown_field() -> None:
    statefulset = yaml.safe_load(yaml.safe_dump(one("StatefulSet")))
    statefulset["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/"}
    with pytest.raises(kubernetes_validate.ValidationError, match="httpGett"):
        kubernetes_validate.validate(statefulset, kubernetes_versions()[0], strict=True)


def strimzi_classpath() -> str:
    """The checker's classpath from k8s/check/pom.xml, resolved by Maven once per pom and cached."""
    for tool in ("java", "mvn"):
        assert shutil.which(tool), f"`{tool}` is needed to check the Strimzi resources (Java 17+ and Maven)"
    digest = hashlib.sha256(CHECKER_POM.read_bytes()).hexdigest()[:16]
    cached = CLASSPATH_CACHE / f"classpath-{digest}.txt"
    if cached.exists():
        classpath = cached.read_text().strip()
        if all(Path(jar).exists() for jar in classpath.split(os.pathsep)):
            return classpath
    CLASSPATH_CACHE.mkdir(parents=True, exist_ok=True)
    command = ["mvn", "-q", "-B", "-f", str(CHECKER_POM), "dependency:build-classpath", f"-Dmdep.outputFile={cached}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"Maven could not resolve the checker's jars:\n{result.stdout}\n{result.stderr}"
    return cached.read_text().strip()


def run_checker(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = ["java", "-cp", strimzi_classpath(), str(CHECKER), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_strimzi_resources_are_valid_for_strimzi_v1() -> None:
    strimzi = [doc for doc in DOCS if doc["apiVersion"].startswith(STRIMZI_GROUP)]
    assert {doc["kind"] for doc in strimzi} == {"Kafka", "KafkaNodePool", "KafkaTopic"}
    result = run_checker(*FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK {len(FILES)} file(s): {len(strimzi)} Strimzi document(s) valid for kafka.strimzi.io/v1" in result.stdout


#: broken copies of k8s/kafka.yaml: (what to replace, its replacement, what the checker must say)
BROKEN = {
    "unknown-property": (
        "  partitions: 1\n",
        "  partitions: 1\n  partitionz: 1\n",
        "spec.partitionz: unknown property",
    ),
    "unknown-metadata": (
        "  name: dual-role\n",
        "  name: dual-role\n  lables: {a: b}\n",
        "metadata.lables: unknown property",
    ),
    "v1beta2-only": (
        "    version: 4.0.1\n",
        "    version: 4.0.1\n    replicas: 3\n",
        "spec.kafka.replicas: not part of",
    ),
    "zookeeper": (
        "  entityOperator:\n",
        "  zookeeper: {replicas: 3}\n  entityOperator:\n",
        "spec.zookeeper: not part of",
    ),
    "old-api": (
        "apiVersion: kafka.strimzi.io/v1\nkind: KafkaTopic",
        "apiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaTopic",
        "apiVersion is kafka.strimzi.io/v1beta2",
    ),
    "wrong-type": ("  partitions: 1\n", '  partitions: "1"\n', "spec.partitions: Cannot coerce String"),
    "below-minimum": ("  partitions: 1\n", "  partitions: 0\n", "spec.partitions: 0 is below the minimum 1"),
    "unknown-enum": (
        "        type: internal\n",
        "        type: sideways\n",
        'listeners[0].type: "sideways" is not a value',
    ),
    "missing-roles": ("  roles: [controller, broker]\n", "", "spec.roles: required in kafka.strimzi.io/v1"),
    "topic-setting": (
        "    cleanup.policy: delete\n",
        "    cleanup.polcy: delete\n",
        "cleanup.polcy: not a Kafka topic setting",
    ),
    "topic-value": ("    cleanup.policy: delete\n", "    cleanup.policy: deleted\n", "Invalid value deleted"),
    "broker-setting": (
        "      auto.create.topics.enable: false\n",
        "      auto.create.topic.enable: false\n",
        "auto.create.topic.enable: not a Kafka broker setting",
    ),
    "forbidden-setting": (
        "      auto.create.topics.enable: false\n",
        "      listeners: PLAIN://:9092\n",
        "Strimzi manages this setting",
    ),
    "no-cluster": (
        "  labels: {strimzi.io/cluster: payments-kafka}\nspec:\n  partitions: 1",
        "  labels: {strimzi.io/cluster: elsewhere}\nspec:\n  partitions: 1",
        "names no Kafka",
    ),
}


def test_the_strimzi_checker_refuses_broken_resources(tmp_path: Path) -> None:
    """A check that cannot fail is no check: each broken copy must fail, for the reason it was broken."""
    source = (K8S / "kafka.yaml").read_text()
    for name, (old, new, _) in BROKEN.items():
        assert old in source, f"{name}: k8s/kafka.yaml no longer contains {old!r}"
        (tmp_path / f"{name}.yaml").write_text(source.replace(old, new, 1))
    result = run_checker("--each", *sorted(tmp_path.glob("*.yaml")))
    assert result.returncode == 1, result.stdout + result.stderr
    sections = [s for s in re.split(r"^(?=OK |FAIL )", result.stdout, flags=re.MULTILINE) if s]
    assert len(sections) == len(BROKEN), result.stdout
    for name, (_, _, expected) in BROKEN.items():
        (section,) = [s for s in sections if s.split(":")[0].endswith(f"/{name}.yaml")]
        assert section.startswith("FAIL"), f"{name} was accepted:\n{section}"
        assert expected in section, f"{name}: expected {expected!r} in\n{section}"


# ---- the app's side ----


def test_every_configured_variable_is_read_by_the_app() -> None:
    read = names_in_code()
    substitution_only = {"POD_NAME", "POD_NAMESPACE"}  # used as $(POD_NAME) in PAYMENTS_ADVERTISED_HOST
    assert set(config()) <= read
    assert set(env()) - substitution_only <= read
    for name in substitution_only:
        assert f"$({name})" in env()["PAYMENTS_ADVERTISED_HOST"]["value"]


def test_probes_use_routes_the_app_serves_on_the_client_port() -> None:
    routes = {resource.canonical for resource in app.web.web_app.router.resources()}
    expected = {"startupProbe": "/health", "readinessProbe": "/health/ready", "livenessProbe": "/health/live"}
    for probe, path in expected.items():
        assert worker()[probe]["httpGet"] == {"path": path, "port": "http"}, probe
        assert path in routes, f"{probe}: the app serves no {path}"


def test_ports_come_from_the_settings_and_only_the_client_port_is_a_client_service() -> None:
    assert container_port("http") == int(config()["PAYMENTS_WEB_PORT"])
    assert container_port("internal") == int(config()["PAYMENTS_INTERNAL_PORT"])
    assert container_port("http") != container_port("internal")
    client = client_service()
    assert [port["targetPort"] for port in client["spec"]["ports"]] == ["http"]
    assert client["spec"].get("type", "ClusterIP") == "ClusterIP"
    headless = headless_service()
    assert [port["targetPort"] for port in headless["spec"]["ports"]] == ["internal"]
    assert headless["spec"]["publishNotReadyAddresses"] is True
    for service in (client, headless):
        assert selects_workers({"matchLabels": service["spec"]["selector"]})


def test_workers_advertise_their_headless_service_name() -> None:
    statefulset = one("StatefulSet")
    headless = headless_service()["metadata"]["name"]
    assert statefulset["spec"]["serviceName"] == headless
    assert env()["PAYMENTS_ADVERTISED_HOST"]["value"] == f"$(POD_NAME).{headless}.$(POD_NAMESPACE).svc.cluster.local"
    # Kubernetes expands $(VAR) only from variables defined earlier in the list.
    order = [item["name"] for item in worker()["env"]]
    assert order.index("POD_NAME") < order.index("PAYMENTS_ADVERTISED_HOST")
    assert order.index("POD_NAMESPACE") < order.index("PAYMENTS_ADVERTISED_HOST")
    assert env()["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env()["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert worker()["command"] == ["faust", "-A", "payments_app.worker", "-L", "uvloop", "-l", "info", "worker"]


def test_the_admin_token_comes_from_a_secret_that_is_not_in_the_repository() -> None:
    name, key = ADMIN_SECRET
    token = env()["PAYMENTS_ADMIN_TOKEN"]
    assert token == {"name": "PAYMENTS_ADMIN_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
    assert "PAYMENTS_ADMIN_TOKEN" not in config()
    assert not of_kind("Secret"), "a token in a manifest is a token in git: create the Secret with kubectl"
    deploy = (ROOT / "README.md").read_text().split("## Deploy", 1)[1].split("\n## ", 1)[0]
    assert f"create secret generic {name} --from-literal={key}=" in deploy


def test_workers_create_no_topics_and_the_kafka_topics_are_the_apps() -> None:
    assert config()["PAYMENTS_CREATE_TOPICS"] == "false"
    assert (SETTINGS.app_id, str(SETTINGS.partitions)) == (config()["PAYMENTS_APP_ID"], config()["PAYMENTS_PARTITIONS"])
    declared = {
        t.get_topic_name(): t for t in vars(payments_app.service.topics).values() if isinstance(t, faust.types.TopicT)
    }
    expected = {name: (topic.partitions, bool(topic.compacting)) for name, topic in declared.items()}
    if not app.conf.topic_disable_leader:
        expected[LeaderAssignor(app)._leader_topic_name] = (1, False)
    topics = kafka_topics()
    assert set(topics) == set(expected)
    for name, (partitions, compacted) in expected.items():
        spec = topics[name]["spec"]
        assert spec["partitions"] == partitions, name
        assert (spec["config"].get("cleanup.policy") == "compact") == compacted, name
        assert spec["replicas"] == int(config()["PAYMENTS_REPLICATION_FACTOR"]) == 3, name
        assert spec["config"]["min.insync.replicas"] == 2, name
    checked_at_start = getattr(payments_app.service.topics, "EXPECTED_PARTITIONS", {})
    assert {name: topics[name]["spec"]["partitions"] for name in checked_at_start} == checked_at_start


def test_the_broker_url_is_the_strimzi_bootstrap_of_the_plain_listener() -> None:
    (kafka,) = of_kind("Kafka")
    name, namespace = kafka["metadata"]["name"], kafka["metadata"]["namespace"]
    (listener,) = [item for item in kafka["spec"]["kafka"]["listeners"] if item["name"] == "plain"]
    assert listener["tls"] is False
    assert config()["BROKER_URL"] == f"kafka://{name}-kafka-bootstrap.{namespace}.svc:{listener['port']}"
    assert all(selects_workers(peer["podSelector"]) for peer in listener["networkPolicyPeers"])
    for pool in of_kind("KafkaNodePool"):
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == name
    # The Kafka version the project's tests run against (the local broker's pom).
    pom = ET.parse(ROOT / "devtools" / "kafka" / "pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    versions = [
        d.findtext("m:version", namespaces=ns)
        for d in pom.iterfind(".//m:dependency", ns)
        if d.findtext("m:artifactId", namespaces=ns) == "kafka_2.13"
    ]
    assert kafka["spec"]["kafka"]["version"] in versions


# ---- the workers' pods ----


def restricted_problems(pod: dict, containers: list[dict], where: str) -> list[str]:
    """What a pod spec (or a Strimzi template's parts) breaks of the `restricted` Pod Security Standard."""
    problems = []
    pod_context = pod.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"{where}: {field}")
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    for volume in pod.get("volumes", []):
        if not set(volume) - {"name"} <= allowed_volumes:
            problems.append(f"{where}: volume {volume['name']} is of a kind restricted forbids")
    if pod_context.get("runAsUser") == 0:
        problems.append(f"{where}: runs as root")
    for container in containers:
        context = container.get("securityContext", {})
        name = f"{where}/{container.get('name', 'container')}"
        if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not set")
        if context.get("runAsUser") == 0:
            problems.append(f"{name}: runs as root")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []) or set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities must drop ALL and add nothing but NET_BIND_SERVICE")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp}")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort")
    return problems


def test_every_pod_meets_the_restricted_pod_security_standard() -> None:
    namespace = one("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(doc["metadata"]["namespace"] == namespace["metadata"]["name"] for doc in DOCS if doc is not namespace)
    spec = pod_spec()
    problems = restricted_problems(spec, spec["containers"] + spec.get("initContainers", []), "StatefulSet")
    # Strimzi builds its pods from these templates (k8s/kafka.yaml).
    (kafka,) = of_kind("Kafka")
    brokers = kafka["spec"]["kafka"]["template"]
    problems += restricted_problems(brokers["pod"], [{"name": "kafka", **brokers["kafkaContainer"]}], "brokers")
    operator = kafka["spec"]["entityOperator"]
    assert set(operator) == {"topicOperator", "template"}, "each operator container needs its securityContext"
    problems += restricted_problems(
        operator["template"]["pod"],
        [{"name": "topic-operator", **operator["template"]["topicOperatorContainer"]}],
        "entity-operator",
    )
    assert problems == []


def test_workers_are_hardened_beyond_restricted() -> None:
    spec = pod_spec()
    context = spec["securityContext"]
    assert context["runAsUser"] > 0 and context["runAsGroup"] > 0 and context["fsGroup"] == context["runAsGroup"]
    assert worker()["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    account = one("ServiceAccount")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False
    for volume in spec["volumes"]:
        if "emptyDir" in volume:
            assert volume["emptyDir"].get("sizeLimit"), f"emptyDir {volume['name']} has no size limit"


def test_each_worker_keeps_its_state_on_its_own_volume_and_they_start_one_at_a_time() -> None:
    statefulset = one("StatefulSet")["spec"]
    assert statefulset["podManagementPolicy"] == "OrderedReady"
    (claim,) = statefulset["volumeClaimTemplates"]
    mounts = {mount["name"]: mount["mountPath"] for mount in worker()["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env()["PAYMENTS_DATA_DIR"]["value"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert int(config()["PAYMENTS_STANDBY_REPLICAS"]) >= 1
    assert statefulset["replicas"] > int(config()["PAYMENTS_STANDBY_REPLICAS"])


def test_a_stopping_worker_leaves_the_service_first_and_has_time_to_finish_its_commit() -> None:
    command = worker()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = int(command[1])
    assert 1 <= pre_stop_s <= 15
    settings = config()
    session_s = float(settings.get("PAYMENTS_SESSION_TIMEOUT_S", "10"))
    commit_timeout_s = float(settings.get("PAYMENTS_TRANSACTION_TIMEOUT_S", session_s)) + COMMIT_TIMEOUT_MARGIN_S
    assert pod_spec()["terminationGracePeriodSeconds"] >= pre_stop_s + commit_timeout_s + 10


def test_resources_are_requested_and_memory_is_limited() -> None:
    resources = worker()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]


def test_workers_spread_and_disruptions_take_one_at_a_time() -> None:
    spread = pod_spec()["topologySpreadConstraints"]
    assert any(item["topologyKey"] == "kubernetes.io/hostname" for item in spread)
    assert all(selects_workers(item["labelSelector"]) for item in spread)
    budget = one("PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"] == one("StatefulSet")["spec"]["selector"]
    assert selects_workers(budget["selector"])


def test_the_network_policy_admits_clients_to_the_client_port_and_only_workers_to_the_internal_one() -> None:
    policy = one("NetworkPolicy")["spec"]
    assert selects_workers(policy["podSelector"])
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    for rule in policy["ingress"]:
        ports = {port["port"] for port in rule["ports"]}
        if "internal" in ports or container_port("internal") in ports:
            assert rule["from"] and all(
                selects_workers(peer["podSelector"]) and set(peer) == {"podSelector"} for peer in rule["from"]
            )
    assert any({p["port"] for p in rule["ports"]} == {"http"} for rule in policy["ingress"])
    egress = {(port["port"], port.get("protocol", "TCP")) for rule in policy["egress"] for port in rule["ports"]}
    assert {(9092, "TCP"), (53, "UDP"), (53, "TCP"), ("internal", "TCP")} <= egress
    (kafka,) = of_kind("Kafka")
    (to_kafka,) = [rule for rule in policy["egress"] if rule["ports"] == [{"port": 9092, "protocol": "TCP"}]]
    assert to_kafka["to"][0]["podSelector"]["matchLabels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
