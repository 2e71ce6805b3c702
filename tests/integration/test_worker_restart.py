"""Foundation: a real `faust worker` writes a RocksDB table from an agent, HTTP reads it, and it survives a restart."""

from __future__ import annotations

import aiohttp
import pytest

from tests.integration.cluster import AppCluster, call, wait_for

pytestmark = pytest.mark.broker


async def balance(session: aiohttp.ClientSession, url: str, account: str) -> int | None:
    status, body = await call(session, "GET", f"{url}/accounts/{account}")
    return body["balance"] if status == 200 else None


async def test_table_written_by_agent_survives_worker_restart(cluster: AppCluster) -> None:
    worker = cluster.add_worker().wait_ready()
    async with aiohttp.ClientSession() as session:
        assert await call(session, "POST", f"{worker.url}/accounts", {"id": "alice"}) == (201, {"id": "alice"})
        status, _ = await call(
            session, "POST", f"{worker.url}/deposits", {"id": "d1", "account": "alice", "amount": 1234}
        )
        assert status == 202

        async def funded() -> bool:
            return await balance(session, worker.url, "alice") == 1234

        await wait_for(funded)

        worker.stop()
        worker.start().wait_ready()

        assert await balance(session, worker.url, "alice") == 1234
        status, record = await call(session, "GET", f"{worker.url}/transactions/d1")
        assert status == 200 and record["status"] == "applied"
