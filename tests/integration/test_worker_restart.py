"""A worker's ledger survives a restart, and the restart reads only the changelog past its local checkpoint."""

from __future__ import annotations

import re

import aiohttp
import pytest

from tests.integration.cluster import AppCluster, admin_session, call, wait_for

pytestmark = pytest.mark.broker


async def balance(session: aiohttp.ClientSession, url: str, account: str) -> int | None:
    status, body = await call(session, "GET", f"{url}/accounts/{account}")
    return body["balance"] if status == 200 else None


async def test_the_ledger_is_kept_across_a_restart_and_only_its_tail_restored(cluster: AppCluster) -> None:
    worker = cluster.add_worker().wait_ready()
    async with admin_session() as session:
        assert await call(session, "POST", f"{worker.url}/accounts", {"id": "alice"}) == (201, {"id": "alice"})
        status, _ = await call(
            session, "POST", f"{worker.url}/deposits", {"id": "d1", "account": "alice", "amount": 1234}
        )
        assert status == 202

        async def funded() -> bool:
            return await balance(session, worker.url, "alice") == 1234

        await wait_for(funded)

        worker.stop()
        log_size = worker.log_path.stat().st_size
        worker.start().wait_ready()

        assert await balance(session, worker.url, "alice") == 1234
        status, record = await call(session, "GET", f"{worker.url}/transactions/d1")
        assert status == 200 and record["status"] == "applied"
        restored = restored_records(worker.log_path.read_text()[log_size:])
        assert sorted(restored) == list(range(cluster.partitions))
        assert sum(restored.values()) == 0, f"the kept store was restored again: {restored}"


def restored_records(log: str) -> dict[int, int]:
    """Per partition, how many changelog records its last opening restored (from the worker's log)."""
    opened = r"partition (\d+): no earlier transaction open after [\d.]+ s; restored (\d+) changelog records"
    found = re.findall(opened, log)
    return {int(partition): int(count) for partition, count in found}
