"""Who may call what, against two real workers: 401 without a token, 403 outside a grant, scoped tokens shared by
every worker and revocable, worker routes only on the internal port, and a worker that will not run unsecured."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from devtools.cluster import WorkerProcess, bearer
from devtools.local_kafka import free_port
from payments_app.exits import EXIT_ON_FAILURE
from payments_app.runtime.topic_check import topic_problems
from payments_app.settings import bootstrap_servers
from tests.integration.cluster import AppCluster, call, settled, wait_for

pytestmark = pytest.mark.broker

PROTECTED = [
    ("POST", "/accounts", {"id": "x"}),
    ("GET", "/accounts/x", None),
    ("GET", "/accounts/x/transactions", None),
    ("POST", "/deposits", {"id": "d", "account": "x", "amount": 1}),
    ("POST", "/withdrawals", {"id": "w", "account": "x", "amount": 1}),
    ("POST", "/transfers", {"id": "t", "payer": "x", "payee": "y", "amount": 1}),
    ("GET", "/transactions/t", None),
    ("GET", "/audit", None),
    ("POST", "/tokens", {"scopes": ["read"], "accounts": ["x"]}),
    ("DELETE", "/tokens/abc", None),
    ("GET", "/no-such-route", None),
]


@pytest.fixture
async def anonymous() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def as_token(token: str, method: str, url: str, body: object = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession(headers=bearer(token)) as client:
        return await call(client, method, url, body)


async def mint(session: aiohttp.ClientSession, url: str, scopes: list[str], accounts: list[str]) -> dict:
    status, body = await call(session, "POST", f"{url}/tokens", {"scopes": scopes, "accounts": accounts})
    assert status == 201, body
    return body


async def fund(session: aiohttp.ClientSession, url: str, account: str, amount: int) -> None:
    assert (await call(session, "POST", f"{url}/accounts", {"id": account}))[0] == 201
    deposit = {"id": f"fund-{account}", "account": account, "amount": amount}
    assert (await call(session, "POST", f"{url}/deposits", deposit))[0] == 202
    assert (await settled(session, url, f"fund-{account}"))["status"] == "applied"


async def test_every_route_but_health_and_the_document_needs_a_token(anonymous, urls) -> None:
    for method, path, body in PROTECTED:
        async with anonymous.request(method, f"{urls[0]}{path}", json=body) as response:
            payload = await response.json()
            assert response.status == 401, (method, path, payload)
            assert payload["error"] == "unauthorized" and "Bearer" in payload["detail"]
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        status, payload = await as_token("pt_0123.not-a-token", method, f"{urls[1]}{path}", body)
        assert status == 401 and payload["error"] == "unauthorized", (method, path)
    for path in ("/health", "/health/ready", "/health/live", "/openapi.json"):
        status, _ = await call(anonymous, "GET", f"{urls[0]}{path}")
        assert status == 200, path


async def test_worker_routes_are_only_on_the_internal_port(session, module_cluster) -> None:
    worker = module_cluster.workers[0]
    for method, path in [("POST", "/internal/entries"), ("GET", "/internal/progress"),
                         ("POST", "/internal/audit"), ("GET", "/metrics")]:  # fmt: skip
        async with session.request(method, f"{worker.url}{path}", json=[]) as response:
            assert response.status == 404, (path, await response.text())
        async with session.request(method, f"{worker.internal_url}{path}", json=[]) as response:
            assert response.status == 200, (path, await response.text())


async def test_a_scoped_token_reads_and_pays_only_from_its_accounts(session, urls) -> None:
    for account in ("auth-a", "auth-b"):
        await fund(session, urls[0], account, 1_000)
    token = (await mint(session, urls[0], ["read", "transfer"], ["auth-a"]))["token"]
    assert token.startswith("pt_")

    assert (await as_token(token, "GET", f"{urls[0]}/accounts/auth-a"))[0] == 200
    status, body = await as_token(token, "GET", f"{urls[0]}/accounts/auth-b")
    assert status == 403 and body["error"] == "forbidden" and "auth-b" in body["detail"]
    assert (await as_token(token, "GET", f"{urls[0]}/accounts/auth-b/transactions"))[0] == 403

    own = {"id": "auth-t1", "payer": "auth-a", "payee": "auth-b", "amount": 100}
    assert (await as_token(token, "POST", f"{urls[0]}/transfers", own))[0] == 202
    assert (await settled(session, urls[0], "auth-t1"))["status"] == "applied"
    assert (await as_token(token, "GET", f"{urls[1]}/transactions/auth-t1"))[0] == 200

    theirs = {"id": "auth-t2", "payer": "auth-b", "payee": "auth-a", "amount": 100}
    assert (await as_token(token, "POST", f"{urls[0]}/transfers", theirs))[0] == 403
    mixed = [{**own, "id": "auth-t3"}, {**theirs, "id": "auth-t4"}]
    assert (await as_token(token, "POST", f"{urls[0]}/transfers", mixed))[0] == 403
    assert (await as_token(token, "GET", f"{urls[0]}/transactions/fund-auth-b"))[0] == 403
    for tx_id in ("auth-t2", "auth-t3", "auth-t4"):
        assert (await call(session, "GET", f"{urls[0]}/transactions/{tx_id}"))[0] == 404, tx_id
    status, account = await call(session, "GET", f"{urls[1]}/accounts/auth-b")
    assert status == 200 and account["balance"] == 1_100

    for method, path, body in PROTECTED[:-1]:
        if path not in ("/accounts/x", "/accounts/x/transactions", "/transfers", "/transactions/t"):
            status, payload = await as_token(token, method, f"{urls[1]}{path}", body)
            assert status == 403 and "admin" in payload["detail"], (method, path, payload)


async def test_a_read_only_token_cannot_pay(session, urls) -> None:
    await fund(session, urls[0], "auth-r", 500)
    token = (await mint(session, urls[1], ["read"], ["auth-r"]))["token"]
    transfer = {"id": "auth-r1", "payer": "auth-r", "payee": "auth-a", "amount": 1}
    status, body = await as_token(token, "POST", f"{urls[0]}/transfers", transfer)
    assert status == 403 and "`transfer` scope" in body["detail"]
    assert (await as_token(token, "GET", f"{urls[0]}/accounts/auth-r"))[0] == 200


async def test_a_token_works_on_every_worker_at_once_until_it_is_revoked(session, urls) -> None:
    await fund(session, urls[0], "auth-w", 1)
    minted = await mint(session, urls[0], ["read"], ["auth-w"])
    assert minted["scopes"] == ["read"] and minted["accounts"] == ["auth-w"]

    # At once: a worker shown a token it has not read yet reads the tokens topic to its end before refusing it.
    assert (await as_token(minted["token"], "GET", f"{urls[1]}/accounts/auth-w"))[0] == 200
    assert await call(session, "DELETE", f"{urls[0]}/tokens/{minted['id']}") == (
        200,
        {"id": minted["id"], "revoked": True},
    )
    assert (await as_token(minted["token"], "GET", f"{urls[0]}/accounts/auth-w"))[0] == 401

    async def refused_by_the_other_worker() -> bool:
        return (await as_token(minted["token"], "GET", f"{urls[1]}/accounts/auth-w"))[0] == 401

    await wait_for(refused_by_the_other_worker, timeout_s=10)
    assert (await call(session, "DELETE", f"{urls[1]}/tokens/{minted['id']}"))[0] == 404


async def test_a_bad_grant_request_is_refused(session, urls) -> None:
    status, body = await call(session, "POST", f"{urls[0]}/tokens", {"scopes": ["write"], "accounts": ["a"]})
    assert status == 422 and "scopes" in body["detail"]
    status, body = await call(session, "POST", f"{urls[0]}/tokens", {"scopes": ["read"]})
    assert status == 400


async def test_tokens_are_kept_as_digests_and_never_logged(session, urls, module_cluster, broker_url) -> None:
    token = (await mint(session, urls[0], ["read"], ["auth-a"]))["token"]
    secret = token.partition(".")[2]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(broker_url), enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(f"{module_cluster.app_id}-tokens", 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        stored = b""
        while (await consumer.position(tp)) < end:
            for message in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                stored += message.value or b""
    finally:
        await consumer.stop()
    assert b"secret_sha256" in stored and secret.encode() not in stored
    for worker in module_cluster.workers:
        log = worker.log_path.read_text(errors="replace")
        assert secret not in log and module_cluster.workers[0].admin_token not in log


def exits_on_its_own(worker: WorkerProcess, timeout_s: float = 60) -> tuple[int, str]:
    worker.start()
    assert worker.process is not None
    try:
        code = worker.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        worker.stop()
        raise
    worker.process = None
    return code, worker.log_path.read_text(errors="replace")


def test_a_worker_without_an_admin_token_refuses_to_start(broker_url: str, tmp_path: Path) -> None:
    worker = WorkerProcess(broker_url, tmp_path, free_port(), "", 4, {"PAYMENTS_APP_ID": "auth-none"})
    code, log = exits_on_its_own(worker)
    assert code == EXIT_ON_FAILURE and "PAYMENTS_ADMIN_TOKEN is not set" in log


def test_a_worker_that_may_not_create_topics_stops_when_they_are_missing(broker_url: str, tmp_path: Path) -> None:
    env = {"PAYMENTS_APP_ID": "auth-no-topics", "PAYMENTS_CREATE_TOPICS": "false"}
    worker = WorkerProcess(broker_url, tmp_path, free_port(), "t" * 40, 4, env)
    code, log = exits_on_its_own(worker)
    assert code == EXIT_ON_FAILURE
    assert "topic 'auth-no-topics-transactions' does not exist (it needs 4 partitions)" in log


async def test_the_topic_check_names_a_mis_sized_topic(module_cluster: AppCluster, broker_url: str) -> None:
    topic = f"{module_cluster.app_id}-transactions"
    bootstrap = bootstrap_servers(broker_url)
    assert await topic_problems(bootstrap, {topic: 4}) == []
    assert await topic_problems(bootstrap, {topic: 8}) == [
        f"topic {topic!r} has 4 partitions; this app is configured for 8"
    ]
    assert await topic_problems(bootstrap, {topic: 4}, replication_factor=3) == [
        f"topic {topic!r} has partitions with 1 replicas; this app is configured for 3"
    ]
