"""The HTTP API against two real workers: answers, fan-out reads from either worker, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from payments_app.domain.money import MAX_AMOUNT_MINOR, partition_of
from tests.integration.cluster import PARTITIONS, call, settled, settled_account

pytestmark = pytest.mark.broker


async def test_accounts_are_created_once_and_readable_from_every_worker(session, urls) -> None:
    assert await call(session, "POST", f"{urls[0]}/accounts", {"id": "api-acct"}) == (201, {"id": "api-acct"})
    status, body = await call(session, "POST", f"{urls[1]}/accounts", {"id": "api-acct"})
    assert status == 409 and body["error"] == "account_exists"
    for url in urls:
        status, body = await call(session, "GET", f"{url}/accounts/api-acct")
        assert status == 200
        assert body["balance"] == 0 and body["in_flight"] == 0
        assert set(body["segments"]) == {str(p) for p in range(4)}


async def test_deposit_transfer_and_status(session, urls) -> None:
    for account in ("api-a", "api-b"):
        assert (await call(session, "POST", f"{urls[0]}/accounts", {"id": account}))[0] == 201
    deposit = {"id": "api-d1", "account": "api-a", "amount": 500}
    applied = {**deposit, "kind": "deposit", "status": "applied", "reason": None}
    # answered once committed at the partition's owner: a deposit to an open account is decided by then
    assert await call(session, "POST", f"{urls[1]}/deposits", deposit) == (202, applied)
    assert await settled(session, urls[0], "api-d1") == applied
    transfer = {"id": "api-t1", "payer": "api-a", "payee": "api-b", "amount": 200}
    assert (await call(session, "POST", f"{urls[0]}/transfers", transfer))[0] == 202
    record = await settled(session, urls[1], "api-t1")
    assert record == {**transfer, "kind": "transfer", "status": "applied", "reason": None}
    assert (await settled_account(session, urls[1], "api-a"))["balance"] == 300
    assert (await settled_account(session, urls[0], "api-b"))["balance"] == 200

    status, body = await call(session, "POST", f"{urls[1]}/transfers", transfer)
    assert status == 200 and body["status"] == "applied"
    withdrawal = {"id": "api-w1", "account": "api-b", "amount": 201}
    assert (await call(session, "POST", f"{urls[0]}/withdrawals", withdrawal))[0] == 202
    record = await settled(session, urls[0], "api-w1")
    assert (record["status"], record["reason"]) == ("rejected", "insufficient_funds")
    assert (await settled_account(session, urls[0], "api-b"))["balance"] == 200


async def test_array_of_transfers_answers_each_item_in_order(session, urls) -> None:
    for account in ("arr-a", "arr-b"):
        await call(session, "POST", f"{urls[0]}/accounts", {"id": account})
    await call(session, "POST", f"{urls[0]}/deposits", {"id": "arr-d", "account": "arr-a", "amount": 100})
    await settled(session, urls[0], "arr-d")
    items = [{"id": f"arr-{n}", "payer": "arr-a", "payee": "arr-b", "amount": 10} for n in range(12)]
    status, body = await call(session, "POST", f"{urls[1]}/transfers", items)
    assert [answer["id"] for answer in body] == [item["id"] for item in items]
    answered = [answer["status"] for answer in body]  # pending: in a collection round when its group committed
    assert set(answered) <= {"applied", "rejected", "pending"}
    assert status == (202 if "pending" in answered else 200)
    statuses = [(await settled(session, urls[0], item["id"]))["status"] for item in items]
    assert all(said in ("pending", final) for said, final in zip(answered, statuses, strict=True))
    applied = statuses.count("applied")
    assert applied + statuses.count("rejected") == len(items)
    # Never more than the 100 the payer holds. Exactly 10 only if the segments' collection rounds never cross:
    # twelve debits hitting four segments at once can be declined while money sits in another segment.
    assert 1 <= applied <= 10
    assert (await call(session, "GET", f"{urls[1]}/accounts/arr-b"))[1]["balance"] == 10 * applied
    assert (await settled_account(session, urls[0], "arr-a"))["balance"] == 100 - 10 * applied


async def test_an_id_reused_for_another_body_is_a_conflict_from_any_worker(session, urls) -> None:
    await call(session, "POST", f"{urls[0]}/accounts", {"id": "c-a"})
    deposit = {"id": "c-d1", "account": "c-a", "amount": 100}
    assert (await call(session, "POST", f"{urls[0]}/deposits", deposit))[0] == 202
    # At once, from the other worker: the owner knows it from its commit, applied or not yet.
    status, body = await call(session, "POST", f"{urls[1]}/deposits", deposit)
    assert status == 200 and body["id"] == "c-d1" and body["amount"] == 100
    for path, other in [("/deposits", {**deposit, "amount": 999}),
                        ("/withdrawals", deposit),
                        ("/transfers", {"id": "c-d1", "payer": "c-a", "payee": "api-a", "amount": 100})]:  # fmt: skip
        for url in urls:
            status, body = await call(session, "POST", f"{url}{path}", other)
            assert status == 409 and body["error"] == "id_conflict", (path, body)
            assert body["existing"]["kind"] == "deposit" and body["existing"]["amount"] == 100
    record = await settled(session, urls[1], "c-d1")
    assert record["status"] == "applied"
    assert await call(session, "POST", f"{urls[1]}/deposits", deposit) == (200, record)
    status, items = await call(session, "POST", f"{urls[0]}/transfers",
                               [{"id": "c-d1", "payer": "c-a", "payee": "api-a", "amount": 1},
                                {"id": "c-t2", "payer": "c-a", "payee": "api-a", "amount": 1}])  # fmt: skip
    assert items[0]["status"] == "conflict" and items[0]["existing"] == record
    assert items[1]["id"] == "c-t2" and items[1]["status"] in ("pending", "applied")
    assert status == (202 if items[1]["status"] == "pending" else 200)
    # The reconciler may be moving the account's money between its own segments: `in_flight` until it lands.
    account = (await call(session, "GET", f"{urls[0]}/accounts/c-a"))[1]
    assert account["balance"] + account["in_flight"] in (99, 100)
    assert (await settled(session, urls[0], "c-t2"))["status"] == "applied"
    account = (await call(session, "GET", f"{urls[0]}/accounts/c-a"))[1]
    assert account["balance"] + account["in_flight"] == 99


async def test_an_answer_can_wait_for_the_decision(session, urls) -> None:
    await call(session, "POST", f"{urls[0]}/accounts", {"id": "w-a"})
    deposit = {"id": "w-d", "account": "w-a", "amount": 7}
    status, body = await call(session, "POST", f"{urls[1]}/deposits?wait=10", deposit)
    assert (status, body["status"]) == (200, "applied")
    transfers = [{"id": f"w-t{n}", "payer": "w-a", "payee": "api-a", "amount": 5} for n in range(2)]
    status, items = await call(session, "POST", f"{urls[0]}/transfers?wait=10", transfers)
    assert status == 200 and [item["status"] for item in items].count("applied") <= 1
    assert all(item.get("reason") == "insufficient_funds" for item in items if item["status"] != "applied"), items
    for url in urls:
        status, body = await call(session, "GET", f"{url}/transactions/w-t0?wait=10")
        assert status == 200 and body["status"] in ("applied", "rejected")
    status, body = await call(session, "GET", f"{urls[0]}/transactions/never-w?wait=0.2")
    assert status == 404
    for wait, expected in (("31", 422), ("-1", 422), ("soon", 400)):
        status, body = await call(session, "GET", f"{urls[0]}/transactions/w-t0?wait={wait}")
        assert status == expected and "wait" in body["detail"]


async def test_an_account_history_is_newest_first_a_page_at_a_time(session, urls) -> None:
    for account in ("h-a", "h-b"):
        await call(session, "POST", f"{urls[0]}/accounts", {"id": account})
    await call(session, "POST", f"{urls[0]}/deposits?wait=10", {"id": "h-d", "account": "h-a", "amount": 100})
    sent = [("h-t0", 10), ("h-t1", 1_000), ("h-t2", 20), ("h-t3", 30)]
    for n, (tx_id, amount) in enumerate(sent):
        transfer = {"id": tx_id, "payer": "h-a", "payee": "h-b", "amount": amount}
        assert (await call(session, "POST", f"{urls[n % 2]}/transfers?wait=10", transfer))[0] == 200
    pages, cursor = [], None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, body = await call(session, "GET", f"{urls[len(pages) % 2]}/accounts/h-a/transactions?{query}")
        assert status == 200, body
        pages.append(body["transactions"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    items = [item for page in pages for item in page]
    assert [len(page) for page in pages] == [2, 2, 1]  # the last full page says there is no more
    assert [(i["id"], i["amount"], i["counterparty"], i["status"]) for i in items] == [
        ("h-t3", -30, "h-b", "applied"),
        ("h-t2", -20, "h-b", "applied"),
        ("h-t1", -1_000, "h-b", "rejected"),
        ("h-t0", -10, "h-b", "applied"),
        ("h-d", 100, None, "applied"),
    ]
    assert items[2]["reason"] == "insufficient_funds" and items[0]["decided_at"] >= items[-1]["decided_at"]
    status, body = await call(session, "GET", f"{urls[1]}/accounts/h-b/transactions")
    assert [(i["id"], i["amount"], i["counterparty"]) for i in body["transactions"]] == [
        ("h-t3", 30, "h-a"),
        ("h-t2", 20, "h-a"),
        ("h-t0", 10, "h-a"),
    ]
    assert body["next_cursor"] is None
    assert (await call(session, "GET", f"{urls[0]}/accounts/nobody/transactions"))[0] == 404
    for query, expected in (("limit=0", 422), ("limit=1001", 422), ("limit=two", 400), ("cursor=zzz", 422)):
        assert (await call(session, "GET", f"{urls[0]}/accounts/h-a/transactions?{query}"))[0] == expected, query


BAD_REQUESTS = [
    ("/transfers", b"{not json", 400),
    ("/transfers", {"id": "x1", "payer": "a", "payee": "b"}, 400),
    ("/transfers", {"id": "x1", "payer": "a", "payee": "b", "amount": 1.5}, 400),
    ("/transfers", {"id": "x1", "payer": "a", "payee": "b", "amount": "10"}, 400),
    ("/transfers", {"id": "x1", "payer": "a", "payee": "b", "amount": True}, 400),
    ("/transfers", {"id": "x1", "payer": "a", "payee": "b", "amount": 5, "memo": "hi"}, 400),
    ("/transfers", {"id": 7, "payer": "a", "payee": "b", "amount": 5}, 400),
    ("/transfers", {"id": "x1", "payer": "a", "payee": "b", "amount": 0}, 422),
    ("/transfers", {"id": "x1", "payer": "a", "payee": "b", "amount": MAX_AMOUNT_MINOR + 1}, 422),
    ("/transfers", {"id": "x 1", "payer": "a", "payee": "b", "amount": 5}, 422),
    ("/transfers", {"id": "x" * 65, "payer": "a", "payee": "b", "amount": 5}, 422),
    ("/transfers", {"id": "x1", "payer": "a", "payee": "a", "amount": 5}, 422),
    ("/transfers", [], 422),
    ("/transfers", [{"id": "x1", "payer": "a", "payee": "b", "amount": 5}] * 2, 422),
    ("/deposits", {"id": "x1", "account": "a", "amount": -5}, 422),
    ("/withdrawals", ["not", "an", "object"], 400),
    ("/accounts", {"id": ""}, 422),
    ("/accounts", {}, 400),
]


@pytest.mark.parametrize(("path", "body", "expected"), BAD_REQUESTS)
async def test_bad_input_gets_a_json_error_and_changes_nothing(session, urls, path, body, expected) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(f"{urls[0]}{path}", data=data) as response:
        assert response.status == expected
        payload = await response.json(content_type=None)
    assert set(payload) == {"error", "detail"} and payload["detail"]
    assert (await call(session, "GET", f"{urls[1]}/transactions/x1"))[0] == 404


async def test_oversized_and_overlong_requests(session, urls) -> None:
    items = [{"id": f"big-{n}", "payer": "a", "payee": "b", "amount": 1} for n in range(10_001)]
    status, body = await call(session, "POST", f"{urls[0]}/transfers", items)
    assert status == 422 and "10000" in body["detail"]
    async with session.post(f"{urls[0]}/transfers", data=b"[" + b" " * (5 * 2**20) + b"]") as response:
        assert response.status == 413
        assert (await response.json(content_type=None))["error"] == "payload_too_large"
    assert (await call(session, "GET", f"{urls[1]}/transactions/big-0"))[0] == 404


async def test_a_query_parameter_a_route_does_not_take_is_refused(session, urls) -> None:
    status, body = await call(session, "POST", f"{urls[0]}/deposits?wiat=5", {"id": "q-1", "account": "a", "amount": 1})
    assert status == 400 and "'wiat'" in body["detail"]
    assert (await call(session, "GET", f"{urls[1]}/transactions/q-1"))[0] == 404


async def test_unknown_resources_are_404(session, urls) -> None:
    status, body = await call(session, "GET", f"{urls[0]}/accounts/nobody-here")
    assert status == 404 and body["error"] == "not_found"
    status, body = await call(session, "GET", f"{urls[1]}/transactions/never-sent")
    assert status == 404 and body["error"] == "not_found"
    status, body = await call(session, "GET", f"{urls[1]}/no/such/path")
    assert status == 404 and body["error"] == "not_found"
    status, body = await call(session, "DELETE", f"{urls[0]}/accounts")
    assert status == 405 and body["error"] == "method_not_allowed"


async def test_health_metrics_openapi_and_audit(session, urls, module_cluster) -> None:
    owned: dict[str, list[int]] = {}
    for url in urls:
        status, body = await call(session, "GET", f"{url}/health")
        assert status == 200
        owned[url] = body["partitions"]
    assert sorted(p for partitions in owned.values() for p in partitions) == [0, 1, 2, 3]
    # a transfer this worker receives and decides itself (its id falls in a partition it owns), whatever ran before
    for account in ("m-a", "m-b"):
        await call(session, "POST", f"{urls[0]}/accounts", {"id": account})
    await call(session, "POST", f"{urls[0]}/deposits?wait=10", {"id": "m-d", "account": "m-a", "amount": 5})
    tx_id = next(f"m-t{n}" for n in range(100) if partition_of(f"m-t{n}", PARTITIONS) in owned[urls[0]])
    transfer = {"id": tx_id, "payer": "m-a", "payee": "m-b", "amount": 1}
    assert (await call(session, "POST", f"{urls[0]}/transfers?wait=10", transfer))[0] == 200
    async with session.get(f"{module_cluster.workers[0].internal_url}/metrics") as response:
        text = await response.text()
    assert "payments_transactions_applied_total" in text
    assert "# HELP payments_transactions_applied_total client transactions applied" in text
    for family in ("payments_http_request_duration_seconds", "payments_submission_decided_seconds",
                   "payments_partition_open_seconds", "payments_commit_duration_seconds",
                   "payments_record_committed_seconds"):  # fmt: skip
        assert f"# TYPE {family} histogram" in text, family
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(samples["payments_submission_decided_seconds_count"]) > 0
    assert float(samples["payments_partition_open_seconds_count"]) >= 1
    assert float(samples["payments_commit_duration_seconds_count"]) >= 1
    assert float(samples["payments_record_committed_seconds_count"]) >= 1  # the accounts opened through the topic
    assert float(samples["payments_rebalances_total"]) >= 1
    assert any(
        k.startswith('payments_http_request_duration_seconds_count{method="POST",route="/transfers"') for k in samples
    )
    status, spec = await call(session, "GET", f"{urls[1]}/openapi.json")
    assert status == 200 and spec == json.loads(Path("web/openapi.json").read_text())
    status, audit = await call(session, "GET", f"{urls[0]}/audit")
    assert status == 200 and audit["ok"], audit["problems"]
    assert [item["partition"] for item in audit["partitions"]] == [0, 1, 2, 3]
