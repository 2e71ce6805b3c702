"""One failure policy, on a real broker: an exception halfway through staging a client's submission stops the worker
before anything of its group is committed, and the restarted worker decides the resubmissions correctly."""

from __future__ import annotations

import aiohttp
import pytest

from payments_app.exits import EXIT_ON_FAILURE
from tests.integration.cluster import call, settled, settled_account
from tests.integration.faulty_worker import FAULT_PREFIX
from tests.integration.ledger_checks import assert_invariants, statuses

pytestmark = pytest.mark.broker

TRANSFERS = [
    {"id": f"{FAULT_PREFIX}{n}", "kind": "transfer", "payer": "fp-alice", "payee": "fp-bob", "amount": 10}
    for n in range(6)
]


async def test_a_submission_that_raises_halfway_commits_nothing_stops_the_worker_and_is_decided_after_restart(
    cluster, session
) -> None:
    worker = cluster.add_worker(app_module="tests.integration.faulty_worker")
    worker.wait_ready()  # and no supervisor: the test sees the worker's own exit
    url = worker.url
    for account in ("fp-alice", "fp-bob"):
        assert (await call(session, "POST", f"{url}/accounts", {"id": account}))[0] == 201
    deposit = {"id": "fp-d1", "account": "fp-alice", "amount": 1_000}
    assert (await call(session, "POST", f"{url}/deposits?wait=10", deposit))[0] in (200, 202)
    assert (await settled(session, url, "fp-d1"))["status"] == "applied"
    body = [{key: value for key, value in tx.items() if key != "kind"} for tx in TRANSFERS]

    try:
        async with session.post(f"{url}/transfers", json=body) as response:
            answered = response.status
    except aiohttp.ClientConnectionError:
        answered = None  # the worker stopped while the request waited for its commit
    assert answered is None or answered >= 500, answered
    assert worker.process is not None and worker.process.wait(timeout=30) == EXIT_ON_FAILURE
    assert "InjectedFault" in worker.log_path.read_text()

    worker.app_module = "payments_app.worker"
    worker.process = None
    worker.start().wait_ready()
    before = await statuses(session, url, [tx["id"] for tx in TRANSFERS])
    assert before == dict.fromkeys(before), f"committed although the worker stopped: {before}"
    assert (await settled_account(session, url, "fp-alice"))["balance"] == 1_000
    assert (await settled_account(session, url, "fp-bob"))["balance"] == 0

    status, items = await call(session, "POST", f"{url}/transfers?wait=10", body)
    assert status in (200, 202) and [item["id"] for item in items] == [tx["id"] for tx in TRANSFERS]
    assert all(item["status"] in ("pending", "applied") for item in items), items
    for tx in TRANSFERS:
        assert (await settled(session, url, tx["id"]))["status"] == "applied"
    submitted = {tx["id"]: tx for tx in TRANSFERS} | {"fp-d1": {**deposit, "kind": "deposit"}}
    await assert_invariants(session, url, submitted, ["fp-alice", "fp-bob"], set(submitted))  # alice 940, bob 60
