"""Back-pressure through the HTTP API: one worker whose backlog bound is two submissions. An array spread over
four partitions is taken for the first two and refused for the others, which its owner never applied."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from payments_app.domain.money import partition_of
from tests.integration.cluster import PARTITIONS, call, running_cluster, settled

pytestmark = pytest.mark.broker

MAX_WAITING = 2


@pytest.fixture(scope="module")
def url(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("backpressure")
    env = {"PAYMENTS_MAX_WAITING": str(MAX_WAITING)}
    with running_cluster(broker_url, root, workers=1, extra_env=env) as cluster:
        yield cluster.workers[0].url


def one_id_per_partition(prefix: str) -> list[str]:
    """Transfer ids in partitions 0, 1, 2 and 3 (a Concurrent transfer is decided in its id's partition)."""
    ids: dict[int, str] = {}
    n = 0
    while len(ids) < PARTITIONS:
        ids.setdefault(partition_of(f"{prefix}{n}", PARTITIONS), f"{prefix}{n}")
        n += 1
    return [ids[p] for p in range(PARTITIONS)]


async def test_an_array_refused_in_part_names_the_refused_items_and_applies_none_of_them(session, url) -> None:
    for account in ("bp-a", "bp-b"):
        assert (await call(session, "POST", f"{url}/accounts", {"id": account}))[0] == 201
    assert (await call(session, "POST", f"{url}/deposits", {"id": "bp-d", "account": "bp-a", "amount": 400}))[0] == 202
    await settled(session, url, "bp-d")
    ids = one_id_per_partition("bp-t")
    items = [{"id": tx_id, "payer": "bp-a", "payee": "bp-b", "amount": 1} for tx_id in ids]

    async with session.post(f"{url}/transfers", json=items) as response:
        status, retry_after, body = response.status, response.headers.get("Retry-After"), await response.json()
    assert status == 202 and retry_after is not None
    taken, refused = ids[:MAX_WAITING], ids[MAX_WAITING:]  # the partitions are asked in the array's order
    assert {item["status"] for item in body[: len(taken)]} <= {"pending", "applied"}  # pending: collecting funds
    assert [item["status"] for item in body[len(taken) :]] == ["refused"] * len(refused)
    assert {item["error"] for item in body[MAX_WAITING:]} == {"backlogged"}

    assert [(await settled(session, url, tx_id))["status"] for tx_id in taken] == ["applied"] * len(taken)
    for tx_id in refused:
        assert (await call(session, "GET", f"{url}/transactions/{tx_id}"))[0] == 404
    assert (await call(session, "GET", f"{url}/accounts/bp-b"))[1]["balance"] == len(taken)

    status, body = await call(session, "POST", f"{url}/transfers", items[MAX_WAITING:])  # sent again, same ids
    assert status in (200, 202) and {item["status"] for item in body} <= {"pending", "applied"}
    assert [(await settled(session, url, tx_id))["status"] for tx_id in refused] == ["applied"] * len(refused)
    assert (await call(session, "GET", f"{url}/accounts/bp-b"))[1]["balance"] == len(ids)
