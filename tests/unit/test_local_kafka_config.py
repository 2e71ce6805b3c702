"""Pure checks of the local broker module: no broker is started here."""

from __future__ import annotations

import os

import pytest

from devtools.local_kafka import KafkaSetupError, new_cluster_id, require_tool


def test_missing_java_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.devnull)
    with pytest.raises(KafkaSetupError, match="`java` was not found"):
        require_tool("java")


def test_cluster_ids_never_look_like_an_option() -> None:
    ids = [new_cluster_id() for _ in range(2_000)]
    assert not any(cluster_id.startswith("-") for cluster_id in ids)
    assert all(len(cluster_id) == 22 for cluster_id in ids)
