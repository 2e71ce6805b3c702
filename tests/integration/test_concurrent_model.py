"""The Concurrent model on two workers: hot payers and payees, overdrafts, segment moves and duplicates."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest

from payments_app.domain.money import partition_of
from tests.integration.cluster import AppCluster, admin_session, call, wait_for
from tests.integration.ledger_checks import assert_invariants, wait_all_decided

pytestmark = pytest.mark.broker


async def test_concurrent_load_keeps_every_invariant(cluster: AppCluster) -> None:
    cluster.add_worker()
    cluster.add_worker()
    cluster.wait_ready()
    urls = [w.url for w in cluster.workers]
    rng = random.Random(42)
    regular = [f"acct-{n}" for n in range(20)]
    accounts = [*regular, "merchant", "payroll", "saver"]
    submitted: dict[str, dict] = {}
    async with admin_session() as session:
        for account in accounts:
            status, body = await call(session, "POST", f"{rng.choice(urls)}/accounts", {"id": account})
            assert status == 201, body
        funding = [("payroll", 50_000)] + [(a, 1_000) for a in regular] + [("saver", 100)] * 8
        for n, (account, amount) in enumerate(funding):
            tx = {"id": f"fund-{n}", "account": account, "amount": amount}
            assert (await call(session, "POST", f"{rng.choice(urls)}/deposits", tx))[0] == 202
            submitted[tx["id"]] = {**tx, "kind": "deposit"}
        await wait_all_decided(session, urls[0], list(submitted))

        status, _ = await call(session, "POST", f"{urls[1]}/transfers",
                               {"id": "saver-all", "payer": "saver", "payee": "merchant", "amount": 800})  # fmt: skip
        assert status == 202
        submitted["saver-all"] = {"id": "saver-all", "payer": "saver", "payee": "merchant", "amount": 800}

        def transfer(n: int) -> dict:
            roll = rng.random()
            payer = "payroll" if roll < 0.3 else rng.choice(regular)
            payee = "merchant" if 0.3 <= roll < 0.7 else rng.choice([a for a in regular if a != payer])
            amount = rng.randint(1, 400) if rng.random() < 0.9 else rng.randint(5_000, 60_000)
            return {"id": f"t-{n}", "payer": payer, "payee": payee, "amount": amount}

        batches = [[transfer(b * 50 + i) for i in range(50)] for b in range(40)]

        async def send(batch: list[dict]) -> None:
            status, body = await call(session, "POST", f"{rng.choice(urls)}/transfers", batch)
            assert status == 202, body
            for item in batch:
                submitted[item["id"]] = item

        await asyncio.gather(*(send(batch) for batch in batches))
        resent = [submitted[f"t-{n}"] for n in range(0, 2000, 20)]
        status, body = await call(session, "POST", f"{urls[0]}/transfers", resent)
        assert status == 202
        assert [item["id"] for item in body] == [item["id"] for item in resent]

        records = await assert_invariants(session, urls[1], submitted, accounts, accepted=set(submitted))
        assert records["saver-all"]["status"] == "applied"
        reasons = {r["reason"] for r in records.values() if r["status"] == "rejected"}
        assert reasons == {"insufficient_funds"}
        assert (await counters(cluster, session))["payments_segment_moves_total"] > 0

        # An account whose money sits in one segment pays from another: its round leaves it uneven, and the
        # reconciler evens it out with moves of its own.
        partitions = cluster.partitions
        assert (await call(session, "POST", f"{urls[0]}/accounts", {"id": "lopsided"}))[0] == 201
        deposit = {"id": "lop-fund", "account": "lopsided", "amount": 8_000}
        assert (await call(session, "POST", f"{urls[0]}/deposits", deposit))[0] == 202
        funded_in = partition_of("lop-fund", partitions)
        elsewhere = next(f"lop-{n}" for n in range(100) if partition_of(f"lop-{n}", partitions) != funded_in)
        pay = {"id": elsewhere, "payer": "lopsided", "payee": "merchant", "amount": 10}
        await wait_all_decided(session, urls[0], ["lop-fund"])
        assert (await call(session, "POST", f"{urls[1]}/transfers", pay))[0] == 202
        await wait_all_decided(session, urls[0], [elsewhere])

        async def rebalanced() -> int:
            return (await counters(cluster, session))["payments_rebalance_moves_requested_total"]

        assert await wait_for(rebalanced) > 0


async def counters(cluster: AppCluster, session: aiohttp.ClientSession) -> dict[str, int]:
    """The workers' counters, summed."""
    totals: dict[str, int] = {}
    for worker in cluster.running():
        status, text = await call_text(session, f"{worker.internal_url}/metrics")
        assert status == 200, text
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name.startswith("payments_") and not name.startswith("#"):
                totals[name] = totals.get(name, 0) + int(float(value))
    return totals


async def call_text(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()
