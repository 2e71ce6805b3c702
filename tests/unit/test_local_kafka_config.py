"""Pure checks of the local broker module: no broker is started here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devtools.local_kafka import KafkaSetupError, LocalKafka, LocalKafkaCluster, new_cluster_id, require_tool


def test_missing_java_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.devnull)
    with pytest.raises(KafkaSetupError, match="`java` was not found"):
        require_tool("java")


def test_cluster_ids_never_look_like_an_option() -> None:
    ids = [new_cluster_id() for _ in range(2_000)]
    assert not any(cluster_id.startswith("-") for cluster_id in ids)
    assert all(len(cluster_id) == 22 for cluster_id in ids)


def written_config(node: LocalKafka) -> dict[str, str]:
    node.data_dir.mkdir(parents=True, exist_ok=True)
    lines = node._write_config().read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_three_nodes_form_one_quorum_and_keep_three_replicas_with_two_in_sync(tmp_path: Path) -> None:
    cluster = LocalKafkaCluster(tmp_path, ports=[(19092, 19093), (19094, 19095), (19096, 19097)])
    configs = [written_config(node) for node in cluster.nodes]
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    assert [config["node.id"] for config in configs] == ["1", "2", "3"]
    assert {config["controller.quorum.voters"] for config in configs} == {voters}
    assert [config["listeners"].split(",")[0] for config in configs] == [
        "PLAINTEXT://127.0.0.1:19092", "PLAINTEXT://127.0.0.1:19094", "PLAINTEXT://127.0.0.1:19096"
    ]  # fmt: skip
    for config in configs:
        assert config["offsets.topic.replication.factor"] == config["transaction.state.log.replication.factor"] == "3"
        assert config["min.insync.replicas"] == config["transaction.state.log.min.isr"] == "2"
        assert config["unclean.leader.election.enable"] == "false"
    assert len({node.cluster_id for node in cluster.nodes}) == 1
    assert cluster.url == "kafka://127.0.0.1:19092;127.0.0.1:19094;127.0.0.1:19096"


def test_one_node_is_a_quorum_of_its_own_with_one_replica(tmp_path: Path) -> None:
    config = written_config(LocalKafka(tmp_path, port=19092, controller_port=19093))
    assert config["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert config["offsets.topic.replication.factor"] == config["min.insync.replicas"] == "1"
