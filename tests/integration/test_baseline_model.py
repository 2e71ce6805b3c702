"""The baseline model through the same HTTP API, on two real workers: money stays in each account's home."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from payments_app.domain.routing import BASELINE, home_of
from tests.integration.cluster import PARTITIONS, AppCluster, call, running_cluster, settled, wait_for

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def baseline_cluster(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppCluster]:
    with running_cluster(broker_url, tmp_path_factory.mktemp("baseline"), model=BASELINE) as cluster:
        yield cluster


async def test_transfers_move_money_between_homes_and_overdrafts_are_refused(
    baseline_cluster: AppCluster, session: aiohttp.ClientSession
) -> None:
    urls = [worker.url for worker in baseline_cluster.workers]
    names = [f"base-{n}" for n in range(20)]
    payer = names[0]
    payee = next(n for n in names if home_of(n, PARTITIONS) != home_of(payer, PARTITIONS))
    for account in (payer, payee):
        assert (await call(session, "POST", f"{urls[0]}/accounts", {"id": account}))[0] == 201
    await call(session, "POST", f"{urls[1]}/deposits", {"id": "base-d1", "account": payer, "amount": 500})
    assert (await settled(session, urls[0], "base-d1"))["status"] == "applied"

    transfer = {"id": "base-t1", "payer": payer, "payee": payee, "amount": 200}
    assert (await call(session, "POST", f"{urls[0]}/transfers", transfer))[0] == 202
    assert (await settled(session, urls[1], "base-t1"))["status"] == "applied"
    overdraft = {"id": "base-t2", "payer": payer, "payee": payee, "amount": 301}
    assert (await call(session, "POST", f"{urls[1]}/transfers", overdraft))[0] == 202
    record = await settled(session, urls[0], "base-t2")
    assert (record["status"], record["reason"]) == ("rejected", "insufficient_funds")

    async def payee_credited() -> dict | None:
        body = (await call(session, "GET", f"{urls[1]}/accounts/{payee}"))[1]
        return body if body["balance"] == 200 else None

    payee_account = await wait_for(payee_credited)
    assert payee_account["segments"][str(home_of(payee, PARTITIONS))] == 200
    payer_account = (await call(session, "GET", f"{urls[0]}/accounts/{payer}"))[1]
    assert payer_account["balance"] == 300
    assert payer_account["segments"][str(home_of(payer, PARTITIONS))] == 300

    async def audited() -> dict | None:
        body = (await call(session, "GET", f"{urls[0]}/audit"))[1]
        return body if body["in_flight"] == 0 else None

    audit = await wait_for(audited)
    assert audit["ok"], audit["problems"]
    assert (audit["balances"], audit["deposits"]) == (500, 500)
